"""One failure stops one job: a 3-job sweep whose middle job fails (a user error, a crash, a NaN loss) runs the other
two to FINISHED, ends with a summary naming the failed job and its reason, a FAILED parent run ("1 of 3 failed")
and exit status 1; the same command again runs only the failed job and attaches to the same parent run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY, cli_env, mlflow_runs

TESTS = Path(__file__).resolve().parent
FAULTS = ["regionmap._target_=sweep_faults.FaultyOracle", "encoder.net._target_=sweep_faults.FaultyEncoder"]
PREPARE = [*TINY, *FAULTS, "pipeline.steps=[prepare]"]
PRETRAIN = [*TINY, *FAULTS, "pipeline.steps=[prepare,pretrain]", "encoder.max_epochs=1"]

REASONS = {
    "user": "the file /nowhere/weights.pth (injected) does not exist.",
    "crash": "RuntimeError: injected crash (building regionmap)",
    "nan": "pretrain: the training loss became nan at epoch 0 (batch 0); training stopped",
}


def run_sweep(tmp_path: Path, *args: str, fault: str | None = None, timeout: int = 600):
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("REGIONALDIFF_DEBUG", None)
    env.pop("HYDRA_FULL_ERROR", None)
    if fault:
        env["REGIONALDIFF_TEST_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "regionaldiff", "-m", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sweep_runs(tmp_path: Path):
    client, runs = mlflow_runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("regionaldiff.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return client, parents, children


def summary_row(text: str, num: int) -> str:
    rows = [line for line in text.splitlines() if line.startswith(f"| #{num} |")]
    assert rows, text[-3000:]
    return rows[-1]


def check_middle_failed(tmp_path: Path, proc: subprocess.CompletedProcess, reason: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-4000:]
    assert "Sweep summary: 1 of 3 failed" in proc.stdout
    row = summary_row(proc.stdout, 1)
    assert "| `seed=1` | FAILED |" in row and reason in row
    for num in (0, 2):
        assert f"| `seed={num}` | FINISHED |" in summary_row(proc.stdout, num)
    sweep_dir = next((tmp_path / "outputs" / "multiruns").iterdir())
    # the job's own line: on the console, or in its submitit log
    job_logs = proc.stderr + "".join(p.read_text() for p in sweep_dir.glob(".submitit/*/*_log.err"))
    assert f"regionaldiff: job #1 failed: {reason}" in job_logs
    client, parents, children = sweep_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.status == "FAILED" and parent.data.tags["regionaldiff.failed"] == "1 of 3 failed"
    by_num = {c.data.tags["regionaldiff.job_num"]: c for c in children}
    assert {n: c.info.status for n, c in by_num.items()} == {"0": "FINISHED", "1": "FAILED", "2": "FINISHED"}
    assert reason in by_num["1"].data.tags["regionaldiff.failure"]
    assert by_num["1"].info.run_id in row
    assert "summary.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "1 of 3 failed" in (sweep_dir / "summary.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["user", "crash"])
def test_a_failing_job_ends_only_itself_and_a_rerun_runs_only_it(tmp_path, fault):
    proc = run_sweep(tmp_path, "seed=0,1,2", *PREPARE, fault=fault)
    check_middle_failed(tmp_path, proc, REASONS[fault])
    if fault == "crash":  # a program error keeps its traceback, next to the job's outputs and in MLflow
        _, _, children = sweep_runs(tmp_path)
        failed = next(c for c in children if c.info.status == "FAILED")
        assert "Traceback" in (Path(failed.data.tags["output_dir"]) / "failure.txt").read_text()

    # the fault fixed, the same command: only job #1 runs, #0 and #2 are reused, one parent run, now FINISHED
    again = run_sweep(tmp_path, "seed=0,1,2", *PREPARE)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "Sweep summary: all 3 finished (2 reused from an earlier run of this sweep)" in again.stdout
    assert "| REUSED |" in summary_row(again.stdout, 0) and "| REUSED |" in summary_row(again.stdout, 2)
    assert "| FINISHED |" in summary_row(again.stdout, 1)
    _, parents, children = sweep_runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["regionaldiff.failed"] == "0 of 3 failed"
    assert len(children) == 4  # the reused jobs made no new run
    attempts = sorted((c.data.tags["regionaldiff.job_num"], c.info.status) for c in children)
    assert attempts == [("0", "FINISHED"), ("1", "FAILED"), ("1", "FINISHED"), ("2", "FINISHED")]

    # the report of this sweep (no report: spec; the first folder names the same sweep): one row, 3 seeds, the
    # failed attempt replaced by the rerun's
    first = sorted((tmp_path / "outputs" / "multiruns").iterdir())[0]
    env = {**cli_env(), "PYTHONPATH": os.pathsep.join([str(TESTS), *filter(None, [cli_env().get("PYTHONPATH")])])}
    report = subprocess.run(
        [sys.executable, "-m", "regionaldiff", "report", "--sweep-dir", str(first), "--out", "rep"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| all | 3 |" in text and "time/prepare_s" in text and "Jobs not in the table" not in text
    assert (tmp_path / "rep" / "report.png").is_file() and (tmp_path / "rep" / "report.csv").is_file()


@pytest.mark.slow
def test_a_nan_loss_ends_only_its_job(tmp_path):
    proc = run_sweep(tmp_path, "seed=0,1,2", *PRETRAIN, fault="nan")
    check_middle_failed(tmp_path, proc, REASONS["nan"])


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None, reason="needs hydra-joblib-launcher"
)
def test_joblib_a_failing_job_ends_only_itself(tmp_path):
    proc = run_sweep(tmp_path, "hydra/launcher=local_parallel", "seed=0,1,2", *PREPARE, fault="crash")
    check_middle_failed(tmp_path, proc, REASONS["crash"])


@pytest.mark.slow
def test_a_job_missing_its_weights_stops_the_sweep_before_any_job_starts(tmp_path):
    proc = run_sweep(tmp_path, "ldm=global,sd15_global", *PREPARE)
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-4000:]
    lines = proc.stderr.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("regionaldiff: error: "))
    assert lines[head] == "regionaldiff: error: 1 of 2 jobs of this sweep cannot start; nothing was run:"
    assert lines[head + 1].startswith("  #1 ldm=sd15_global ")
    assert f"folder {tmp_path / 'weights' / 'stable-diffusion-v1-5'} does not exist" in lines[head + 1]
    assert "hydra.callbacks.sweep.run_anyway=true" in lines[head + 2]
    assert not (tmp_path / "outputs" / "multiruns").exists() and not (tmp_path / "outputs" / "mlflow.db").exists()

    # run anyway: the job without weights fails at its own check, the other one runs
    proc = run_sweep(tmp_path, "ldm=global,sd15_global", *PREPARE, "hydra.callbacks.sweep.run_anyway=true")
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-4000:]
    assert "1 of 2 jobs of this sweep cannot start; running the others" in proc.stderr
    assert "| `ldm=global` | FINISHED |" in summary_row(proc.stdout, 0)
    row = summary_row(proc.stdout, 1)
    assert "| `ldm=sd15_global` | FAILED | the run cannot start: folder" in row and "stable-diffusion-v1-5" in row


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None, reason="needs hydra-submitit-launcher"
)
def test_submitit_a_failing_job_ends_only_itself(tmp_path):
    proc = run_sweep(tmp_path, "hydra/launcher=submitit_local_test", "seed=0,1,2", *PREPARE, fault="user")
    check_middle_failed(tmp_path, proc, REASONS["user"])
