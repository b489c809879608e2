"""Step ``prepare``: the dataset cache, the splits and their leak check, and the region maps of every stimulus."""

from __future__ import annotations

import logging
from pathlib import Path

from regionaldiff.config import plain
from regionaldiff.data.base import SPLITS, check_no_stimulus_leak
from regionaldiff.maps.cache import generate_cached
from regionaldiff.steps.context import LOADER_KEYS, PipelineContext, artifact_key
from regionaldiff.visualize import save_stimulus_grid

log = logging.getLogger(__name__)


def prepare(ctx: PipelineContext, train: bool = True) -> None:
    """Set the datamodule up, check the splits share no stimulus, and attach the region maps."""
    cfg, dm = ctx.cfg, ctx.datamodule
    dataset_key = artifact_key("dataset", {k: v for k, v in plain(cfg.dataset).items() if k not in LOADER_KEYS})
    ctx.keys["prepare"] = {"dataset": dataset_key, "regionmap": plain(cfg.regionmap)}
    dm.setup()
    leaks = check_no_stimulus_leak({s: dm.get_split(s).image_ids for s in SPLITS})
    # per-image generators (slic, sam) are cached on disk by generator config and image content, and resume
    # after an interruption; None for regionmap=none
    maps = generate_cached(ctx.regionmap, dm, Path(cfg.paths.cache_dir) / "regionmaps")
    dm.set_region_maps(maps)
    sizes = {f"data/n_{s}": len(dm.get_split(s)) for s in SPLITS}
    ctx.tracker.log_metrics(sizes)
    ctx.tracker.set_tags(
        {
            "data.name": dm.name,
            "data.leak_check": "passed: " + ", ".join(f"{k}={v}" for k, v in leaks.items()),
            **{f"data.{k}": v for k, v in dm.describe().items()},
            **dm.run_tags,
        }
    )
    report = dm.data_report
    ctx.tracker.log_metrics({f"data/{k}": v for k, v in report.items() if isinstance(v, (int, float))})
    if train:
        ids, images, _ = dm.stimuli("train")
        n = min(16, len(ids))
        grid = save_stimulus_grid(
            ctx.output_dir / "stimuli.png",
            images[:n],
            [maps[i] for i in ids[:n]] if maps else None,
            label_colours=dm.class_map_colours,  # the generated maps name the class, whatever models see
        )
        ctx.tracker.log_artifact(grid, "figures")
    log.info("prepare: %s", ", ".join(f"{k}={v}" for k, v in sizes.items()))
