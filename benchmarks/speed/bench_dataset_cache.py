"""Time to the first training batch and peak memory: EEG-ImageNet official file vs the memory-mapped cache.

The benchmark writes its own EEG-ImageNet-format file (default: 12,000 trials of 128 x 500 float32, about
3 GB, legacy torch serialisation like the release; images 32 px), then measures in fresh subprocesses:

1. ``official``: an empty cache: the file is read, converted and cached, then the first batch is drawn;
2. ``cache``: the same, with the cache in place (what every later run does).

Each measurement runs in its own process, reporting wall time from the datamodule's construction to the first
training batch and the process's peak resident memory (``VmHWM``, which includes the interpreter, torch and
lightning: the "after imports" column subtracts the peak measured just before the datamodule is built).

Usage::

    python benchmarks/speed/bench_dataset_cache.py                     # full size (~3 GB file, needs ~8 GB RAM)
    python benchmarks/speed/bench_dataset_cache.py --trials 1000       # reduced size
    python benchmarks/speed/bench_dataset_cache.py --workdir /big/disk --keep
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

WNIDS = [f"n{9000000 + k:08d}" for k in range(40)]


def write_dataset(root: Path, n_trials: int, n_chans: int, n_times: int, n_images: int, seed: int = 0) -> Path:
    """An EEG-ImageNet-format dataset: the EEG file, a split file and small JPEG images."""
    import numpy as np
    import torch
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    images = [f"{WNIDS[i % 40]}_{i}" for i in range(n_images)]
    for name in images:
        folder = root / "imageNet_images" / name.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{name}.JPEG")
    trials = []
    for i in range(n_trials):
        image = i % n_images
        eeg = torch.from_numpy(rng.standard_normal((n_chans, n_times), dtype=np.float32))
        trials.append({"eeg": eeg, "image": image, "label": image % 40, "subject": 1 + i % 6})
    path = root / "eeg_5_95_std.pth"
    torch.save({"dataset": trials, "labels": WNIDS, "images": images}, path, _use_new_zipfile_serialization=False)
    del trials
    by_image = np.arange(n_trials) % n_images
    split = {
        "train": np.flatnonzero(by_image % 10 < 8).tolist(),
        "val": np.flatnonzero(by_image % 10 == 8).tolist(),
        "test": np.flatnonzero(by_image % 10 == 9).tolist(),
    }
    torch.save({"splits": [split]}, root / "block_splits_by_image_all.pth", _use_new_zipfile_serialization=False)
    return path


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; ``ru_maxrss`` would include the parent's peak before exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(root: str, cache_dir: str) -> None:
    """(child process) datamodule -> first training batch; prints a JSON line."""
    import torch  # noqa: F401 - imported before the clock starts, as in a real run

    from regionaldiff.data.eeg_imagenet import EEGImageNetDataModule

    baseline_mb = peak_rss_mb()  # interpreter + torch + lightning
    start = time.perf_counter()
    dm = EEGImageNetDataModule(root=root, cache_dir=cache_dir, image_size=32, batch_size=32)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mb": peak_mb,
                "baseline_rss_mb": baseline_mb,
                "cache_hit": dm.data_report["cache_hit"],
                "batch": list(batch["eeg"].shape),
                "n_train": len(dm.get_split("train")),
            }
        )
    )


def run_child(root: Path, cache_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(root), str(cache_dir)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12000)
    parser.add_argument("--chans", type=int, default=128)
    parser.add_argument("--times", type=int, default=500)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--workdir", type=Path, default=None, help="where the file and cache go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(*args.child)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-eeg-imagenet-"))
    root, cache = work / "eeg_imagenet", work / "cache"
    try:
        start = time.perf_counter()
        path = write_dataset(root, args.trials, args.chans, args.times, args.images)
        size_gb = path.stat().st_size / 1e9
        print(
            f"wrote {path} ({size_gb:.2f} GB, {args.trials} trials of {args.chans} x {args.times}) in {time.perf_counter() - start:.0f} s"
        )
        shutil.rmtree(cache, ignore_errors=True)
        official = run_child(root, cache)
        cached = run_child(root, cache)
        rows = [("official file (convert + cache)", official), ("cache", cached)]
        print(
            "\n| start from | time to first batch (s) | peak RSS (MB) | of which after imports (MB) | file size (MB) |"
        )
        print("| --- | --- | --- | --- | --- |")
        for name, r in rows:
            print(
                f"| {name} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['baseline_rss_mb']:.0f} | {size_gb * 1000:.0f} |"
            )
        assert official["cache_hit"] == 0.0 and cached["cache_hit"] == 1.0
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
