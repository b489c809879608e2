"""Generation time and quality of the samplers on the synthetic benchmark: our default solver (DPM++ 2M, 25 steps)
against DreamDiffusion's PLMS with 250 steps, on the same trained model, the same test EEG and seed.

PLMS (diffusers' PNDM) predicts noise or v, not clean latents, so the model here is the default tiny regional LDM
trained with ``ldm.noise_schedule.prediction_type=v_prediction`` (no clipping); everything else is the embedded default.
The model is trained once (``pipeline.steps=[prepare,pretrain,finetune]``), then each sampler runs the generate and
evaluate steps on it; the generate step's wall time is read from MLflow (``time/generate_s``).

Usage::

    python benchmarks/speed/bench_samplers.py --workdir /tmp/samplers     # about 25 minutes on a 2-core CPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

COMMON = [
    "ldm.noise_schedule.prediction_type=v_prediction",
    "ldm.sampling.clip_sample=false",
    "trainer.enable_progress_bar=false",
    "logger.experiment_name=samplers",
]
SAMPLERS = {
    "dpmpp_2m_25 (ours)": ["ldm.sampling.scheduler=dpmpp_2m", "ldm.sampling.num_steps=25"],
    "pndm_250 (DreamDiffusion's PLMS)": ["ldm.sampling.scheduler=pndm", "ldm.sampling.num_steps=250"],
    "ddim_25": ["ldm.sampling.scheduler=ddim", "ldm.sampling.num_steps=25"],
}
METRICS = ("eval/recon_class_acc", "eval/recon_region_miou", "eval/ssim", "eval/pixcorr")


def run(workdir: Path, *overrides: str) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "regionaldiff", *COMMON, *overrides],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"regionaldiff {' '.join(overrides)} failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="outputs/bench_samplers")
    p.add_argument("--only", nargs="*", default=list(SAMPLERS))
    p.add_argument("--out", default=None)
    args = p.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    run(workdir, "pipeline.steps=[prepare,pretrain,finetune]")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    results = {}
    for name in args.only:
        run(workdir, *SAMPLERS[name], f"hydra.run.dir=outputs/runs/{name.split()[0]}")
        metrics = json.loads((workdir / "outputs" / "runs" / name.split()[0] / "metrics.json").read_text())
        experiment = client.get_experiment_by_name("samplers")
        latest = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
        generate_s = latest[0].data.metrics.get("time/generate_s")
        results[name] = {**{m: metrics.get(m) for m in METRICS}, "generate_s_100_images": generate_s}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
