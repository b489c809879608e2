"""A real tracking server stopped in the middle of a real run and started again (docs/failures.md): the run goes
on, ends normally, and every record it made reaches the server once it is back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, cli_env
from regionaldiff.tracking.outbox import read_journal, read_state

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``mlflow server`` on 127.0.0.1 only, with its store in ``folder``; stopped and started at will."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port, self.proc = folder, port, None
        self.uri = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--backend-store-uri",
                f"sqlite:///{self.folder / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.folder / "mlartifacts"),
                "--workers",
                "1",
            ],  # fmt: skip
            cwd=self.folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopping it stops its workers too
        )
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=5):
                    return
            except OSError:
                assert self.proc.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def journal_records(root: Path) -> list[dict]:
    found = list(root.glob("outputs/runs/*/tracking/*/journal.jsonl"))
    return read_journal(found[0].parent) if found else []


def test_a_server_stopped_mid_run_and_restarted_loses_nothing(tmp_path):
    server = Server(tmp_path / "server", free_port())
    server.start()
    env = dict(cli_env(), REGIONALDIFF_TRACKING_WAIT="300", REGIONALDIFF_SYSTEM_METRICS="0")
    # enough epochs that the run outlasts stopping the server, on a loaded machine too (8 took 3 s there)
    args = [*TINY, "dataset.n_train=96", "encoder.max_epochs=40", "pipeline.steps=[prepare,pretrain]"]
    job = subprocess.Popen(
        [sys.executable, "-m", "regionaldiff", *args, f"logger.tracking_uri={server.uri}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        # the server goes away once the encoder's first epoch was logged
        while not any("pretrain/train_loss" in str(r) for r in journal_records(tmp_path)):
            assert job.poll() is None and time.monotonic() < deadline, "the run ended before the server could stop"
            time.sleep(0.2)
        server.stop()
        logged_before = len(journal_records(tmp_path))
        while len(journal_records(tmp_path)) <= logged_before + 2 and job.poll() is None:
            time.sleep(0.2)  # the run goes on and keeps records while the server is away
        assert job.poll() is None, "the run ended before it logged while the server was away"
        server.start()
        out, _ = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            job.kill()
        server.stop()
    assert job.returncode == 0, out[-4000:]
    assert "Traceback" not in out and "did not take a record" in out and "is back after" in out
    folder = next(tmp_path.glob("outputs/runs/*/tracking/*"))
    records, state = read_journal(folder), read_state(folder)
    assert state["sent"] == len(records)
    server.start()
    try:
        run = MlflowClient(server.uri).get_run(state["run_id"])
    finally:
        server.stop()
    assert run.info.status == "FINISHED"
    logged = {m[0] for r in records for m in r.get("metrics", [])}
    assert "time/pretrain_s" in logged and logged <= set(run.data.metrics)


def test_a_server_not_there_at_the_start_is_one_line_before_any_work(tmp_path, run_cli):
    uri = f"http://127.0.0.1:{free_port()}"
    proc = run_cli(*TINY, f"logger.tracking_uri={uri}", check=False, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0].startswith(
        f"regionaldiff: error: the MLflow tracking server {uri} does not answer"
    )
    assert not (tmp_path / "outputs" / "cache").exists() and not (tmp_path / "outputs" / "artifacts").exists()


def test_a_truncated_cache_and_encoder_are_rebuilt_with_a_warning_and_no_traceback(tmp_path, run_cli):
    args = [*TINY, "pipeline.steps=[prepare,pretrain]", "logger=none"]
    run_cli(*args)
    outputs = tmp_path / "outputs"
    (cache,) = outputs.glob("cache/synthetic_*.npz")
    (encoder,) = outputs.glob("artifacts/pretrain/*/encoder.pt")
    for path in (cache, encoder):
        with open(path, "r+b") as f:
            f.truncate(1024)
    proc = run_cli(*args)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert f"dataset cache {cache} has 1024 bytes" in out and f"{encoder} has 1024 bytes" in out
    assert "pretrain: encoder saved" in out and encoder.stat().st_size > 1024
