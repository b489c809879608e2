"""THINGS-EEG2 at full size on CPU: ``prepare`` and one encoder epoch through ``regionaldiff``, time and peak memory.

The benchmark writes the dataset in its official format at full size (random values; no download): 1,654 training
concepts x 10 images and 200 test concepts (16,740 JPEG images), and per subject the preprocessed files
``preprocessed_eeg_training.npy`` ``[16540, 4, 17, 100]`` and ``preprocessed_eeg_test.npy`` ``[200, 80, 17, 100]``
(float64 dicts, as released: about 1.1 GB per subject). It also saves a small random-weight CLIP vision tower with
the real ViT-L/14 embedding width (768) for ``encoder/align=clip``: this measures the pipeline's own costs (region
maps, the region target over 1,855 concepts, the contrastive term, the caches), not CLIP ViT-L's forward pass, which
is GPU work (docs/benchmarks.md).

Then, each in a fresh process (wall time and the child's peak resident memory, ``ru_maxrss``):

1. ``prepare`` on an empty cache (EEG cache, images, leak checks, ``regionmap=slic`` maps of every image);
2. ``prepare`` + ``pretrain`` with ``encoder.max_epochs=1`` (the caches reused): one epoch of the tiny encoder over
   every training trial, with the region head (object/background layouts) and the alignment to the image embedding.

Usage::

    python benchmarks/speed/bench_things_full.py                          # 2 subjects, prepare + one epoch
    python benchmarks/speed/bench_things_full.py --subjects 10 --prepare-only
    python benchmarks/speed/bench_things_full.py --workdir /big/disk --keep
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THINGS17 = ["Pz", "P3", "P7", "O1", "Oz", "O2", "P4", "P8", "P1", "P5", "PO7", "PO3", "POz", "PO4", "PO8", "P6", "P2"]


def write_things(root: Path, subjects: int, train_concepts: int, per_concept: int, test_concepts: int) -> None:
    """THINGS-EEG2's official layout: image metadata, images, and each subject's preprocessed files."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    image_dir = root / "image_set"
    train_c = [f"{k + 1:05d}_train{k:04d}" for k in range(train_concepts) for _ in range(per_concept)]
    train_f = [f"train{k:04d}_{j + 1:02d}b.jpg" for k in range(train_concepts) for j in range(per_concept)]
    test_c = [f"{k + 1:05d}_test{k:03d}" for k in range(test_concepts)]
    test_f = [f"test{k:03d}_01s.jpg" for k in range(test_concepts)]
    metadata = {
        "train_img_concepts": train_c,
        "train_img_files": train_f,
        "test_img_concepts": test_c,
        "test_img_files": test_f,
    }
    image_dir.mkdir(parents=True, exist_ok=True)
    np.save(image_dir / "image_metadata.npy", metadata)
    for part, concepts, files in (("training_images", train_c, train_f), ("test_images", test_c, test_f)):
        for concept, name in zip(concepts, files):
            folder = image_dir / part / concept
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(folder / name)
    times = np.round(-0.2 + np.arange(100) / 100.0, 6)
    for sub in range(1, subjects + 1):
        folder = root / "preprocessed_data" / f"sub-{sub:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for part, n_img, reps in (("training", len(train_f), 4), ("test", len(test_f), 80)):
            data = rng.standard_normal((n_img, reps, len(THINGS17), 100))
            np.save(
                folder / f"preprocessed_eeg_{part}.npy",
                {"preprocessed_eeg_data": data, "ch_names": THINGS17, "times": times},
            )
            del data


def write_clip(folder: Path) -> None:
    """A small random-weight CLIP vision tower with ViT-L/14's embedding width (768), saved as transformers does."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=768,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(folder)


def run(args: list[str], cwd: Path) -> dict[str, float]:
    """Run ``regionaldiff`` in a fresh process; its wall time and peak resident memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "regionaldiff", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"regionaldiff failed ({proc.returncode}): {' '.join(args)}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": seconds, "peak_rss_gb": max(peak, before) / 1024**2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--train-concepts", type=int, default=1654)
    parser.add_argument("--images-per-concept", type=int, default=10)
    parser.add_argument("--test-concepts", type=int, default=200)
    parser.add_argument("--prepare-only", action="store_true", help="measure prepare only (e.g. all 10 subjects)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the files and caches go (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-things-"))
    root = work / "things_eeg2"
    try:
        start = time.perf_counter()
        if not (root / "image_set" / "image_metadata.npy").is_file():
            write_things(root, args.subjects, args.train_concepts, args.images_per_concept, args.test_concepts)
            write_clip(work / "weights" / "clip-vit-large-patch14")
        size_gb = sum(f.stat().st_size for f in (root / "preprocessed_data").rglob("*.npy")) / 1e9
        print(f"dataset in {root}: {size_gb:.1f} GB of EEG files ({time.perf_counter() - start:.0f} s to write)")
        shutil.rmtree(work / "outputs", ignore_errors=True)
        common = [
            "dataset=things_eeg2",
            f"dataset.root={root}",
            f"dataset.subjects=[{','.join(str(s) for s in range(1, args.subjects + 1))}]",
            "regionmap=slic",
            "encoder/align=clip",
            f"paths.weights_dir={work / 'weights'}",
            f"paths.root_dir={work}",
            "logger=none",
            "trainer.enable_progress_bar=false",
        ]
        rows = [("prepare (empty cache)", run([*common, "pipeline.steps=[prepare]"], work))]
        if not args.prepare_only:
            one_epoch = [*common, "pipeline.steps=[prepare,pretrain]", "encoder.max_epochs=1"]
            rows.append(("prepare (cached) + one encoder epoch", run(one_epoch, work)))
        print(f"\nTHINGS-EEG2 full size, {args.subjects} subject(s), 17 channels, tiny encoder, CPU")
        print("| run | wall time (min) | peak RSS (GB) |")
        print("| --- | --- | --- |")
        for name, r in rows:
            print(f"| {name} | {r['seconds'] / 60:.1f} | {r['peak_rss_gb']:.2f} |")
        print(json.dumps({name: r for name, r in rows}))
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
