"""Region maps at dataset scale: SAM map generation in images/s, and where the time goes.

Runs ``regionmap=sam`` (:class:`regionaldiff.maps.sam.SamRegionMap`) as the pipeline does, on synthetic scenes, with a
checkpoint of random weights written in SAM's own format (segment-anything's registry, ``state_dict`` saved with
``torch.save``): the same shapes and the same code path as the released checkpoints. The time of one image is split
into the batched image encoder (ViT at 1024 px) and the automatic mask generator (prompt grid, mask decoder,
filtering, NMS), so that the cost of precomputing maps (THINGS-EEG2: 16,740 images) can be read off.

Usage::

    python benchmarks/speed/bench_sam.py                              # ViT-B, CPU, 8 images, points_per_side 8
    python benchmarks/speed/bench_sam.py --model vit_h --device cuda --images 64 --batch-size 8   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4, help="images per image-encoder pass")
    p.add_argument("--points-per-side", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    import numpy as np
    import torch
    from segment_anything import sam_model_registry

    from regionaldiff.data.synthetic.scenes import render_scene
    from regionaldiff.maps.sam import SamRegionMap

    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="bench_sam_"))
    checkpoint = workdir / f"sam_{args.model}_random.pth"
    torch.manual_seed(0)
    torch.save(sam_model_registry[args.model](checkpoint=None).state_dict(), checkpoint)
    rng = np.random.default_rng(0)
    images = [render_scene(rng, 5, args.image_size, 1, 3).image for _ in range(args.images)]
    generator = SamRegionMap(
        str(checkpoint),
        model_type=args.model,
        device=args.device,
        batch_size=args.batch_size,
        points_per_side=args.points_per_side,
    )
    _ = generator.mask_generator  # load SAM before timing
    labels = [0] * len(images)

    # where the time goes: the batched encoder alone, then the whole generator (encoder + mask generation)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    start = time.perf_counter()
    for i in range(0, len(images), args.batch_size):
        generator._embed(images[i : i + args.batch_size])
    sync()
    encoder_s = time.perf_counter() - start
    start = time.perf_counter()
    regions = generator.segment_regions(images, labels)
    sync()
    total_s = time.perf_counter() - start
    result = {
        "model": args.model,
        "device": args.device,
        "images": len(images),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "points_per_side": args.points_per_side,
        "threads": torch.get_num_threads(),
        "encoder_s_per_image": encoder_s / len(images),
        "total_s_per_image": total_s / len(images),
        "mask_generation_s_per_image": (total_s - encoder_s) / len(images),
        "images_per_s": len(images) / total_s,
        "hours_for_things_eeg2_16740": 16740 * total_s / len(images) / 3600,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "maps_shape": list(np.asarray(regions[0].semantic).shape),
    }
    if args.device.startswith("cuda"):
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
