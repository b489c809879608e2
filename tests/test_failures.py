"""Faults of the world around a run, injected one at a time (docs/failures.md): a tracking server that goes away
mid-run or is not there at the start, a dataset cache or a trained artifact cut short, a full disk."""

from __future__ import annotations

import errno
import json
import logging
import socket
from pathlib import Path

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from conftest import TINY
from regionaldiff.artifacts import ArtifactStore, DiskFullError
from regionaldiff.commands import sync
from regionaldiff.data.cache import ArrayCache, cached_npz
from regionaldiff.errors import format_user_error
from regionaldiff.tracking.mlflow_run import JobTracker, TrackingUnavailableError, require_tracking_server
from regionaldiff.tracking.outbox import HTTP_SETTINGS, Outbox, bound_http_retries, read_journal


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_away(*args, **kwargs):
    """What MLflow's client raises once its HTTP retries give up on a server that went away."""
    raise MlflowException(
        "API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/log-batch failed: Connection refused"
    )


# -- the tracking server goes away ----------------------------------------------------------------
def test_a_server_away_mid_run_costs_no_work_and_sync_sends_the_rest(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REGIONALDIFF_TRACKING_WAIT", "0")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job = tmp_path / "job"
    job.mkdir()
    tracker = JobTracker(True, uri, "exp", tmp_path / "art", "job", system_metrics=False, job_dir=job)
    tracker.log_metrics({"data/n_train": 48})
    for name in ("log_batch", "log_artifact", "set_terminated"):  # the server goes away
        monkeypatch.setattr(tracker.client, name, server_away)
    tracker.log_metrics({"pretrain/val_loss": 1.5}, step=3)  # none of these raises
    tracker.set_tags({"checkpoint.encoder": "/x/encoder.pt"})
    (job / "metrics.json").write_text("{}")
    tracker.log_artifact(job / "metrics.json")
    tracker.lightning_logger().log_metrics({"finetune/train_loss": 0.25}, step=7)
    assert tracker.finish("FINISHED") is False  # records left: the job still ends normally
    err = capsys.readouterr().err
    assert f"regionaldiff sync {job}" in err and "did not take 5 record(s)" in err
    client = MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "RUNNING" and set(run.data.metrics) == {"data/n_train"}
    journal = job / "tracking" / tracker.run_id
    assert len(read_journal(journal)) == 6 and json.loads((journal / "state.json").read_text())["sent"] == 1

    monkeypatch.undo()  # the server is back: `regionaldiff sync JOB_DIR` replays what is left into the same run
    assert sync.main([str(job)]) == 0
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["pretrain/val_loss"] == 1.5 and run.data.metrics["finetune/train_loss"] == 0.25
    assert client.get_metric_history(tracker.run_id, "finetune/train_loss")[0].step == 7
    assert run.data.tags["checkpoint.encoder"] == "/x/encoder.pt"
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["metrics.json"]
    assert sync.main([str(job)]) == 0  # nothing is sent twice
    assert "nothing left to send" in capsys.readouterr().out
    assert len(client.get_metric_history(tracker.run_id, "pretrain/val_loss")) == 1


class FlakyClient:
    """Takes records only while ``up``; counts the tries."""

    def __init__(self) -> None:
        self.up, self.tries, self.metrics = True, 0, []

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self.tries += 1
        if not self.up:
            server_away()
        self.metrics += [(m.key, m.value) for m in metrics]


def test_queued_records_are_sent_in_order_when_the_server_is_back_during_the_run(tmp_path):
    now = [0.0]
    client = FlakyClient()
    box = Outbox(client, "run", "http://tracking:5000", tmp_path / "t", clock=lambda: now[0])
    put = lambda i: box.put({"op": "batch", "metrics": [["m", float(i), 0, i]]})  # noqa: E731
    put(0)
    client.up = False
    put(1)
    assert box.away and client.tries == 2
    put(2)  # within the back-off delay: journaled, the server is not tried
    assert client.tries == 2 and len(box.pending) == 2
    client.up = True
    now[0] += 2.5  # the delay has passed: the next record sends the queue, in order
    put(3)
    assert not box.away and not box.pending and client.metrics == [("m", 0.0), ("m", 1.0), ("m", 2.0), ("m", 3.0)]
    assert json.loads((tmp_path / "t" / "state.json").read_text())["sent"] == 4


def test_a_record_the_server_refuses_for_good_does_not_block_the_queue(tmp_path):
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    class Refusing(FlakyClient):
        def log_batch(self, run_id, metrics=(), params=(), tags=()):
            if params:
                raise MlflowException("changing a param's value is not allowed", error_code=INVALID_PARAMETER_VALUE)
            super().log_batch(run_id, metrics)

    client = Refusing()
    box = Outbox(client, "run", "http://tracking:5000", None)
    box.put({"op": "batch", "params": [["seed", "1"]]})
    box.put({"op": "batch", "metrics": [["m", 1.0, 0, 0]]})
    assert not box.pending and client.metrics == [("m", 1.0)]


def test_a_server_that_is_not_there_at_the_start_is_one_line_naming_the_uri():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingUnavailableError) as caught:
        require_tracking_server(uri, timeout=5)
    line = format_user_error(caught.value)
    assert "\n" not in line
    assert line.startswith(f"regionaldiff: error: the MLflow tracking server {uri} does not answer")
    assert "logger=none" in line and "sqlite" in line
    require_tracking_server("sqlite:///somewhere.db")  # a local store is always there


def test_mlflow_http_retries_are_bounded_unless_the_user_set_them(monkeypatch):
    for name in HTTP_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    bound_http_retries()
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT

    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 2 and MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 300


# -- what is reused is verified ----------------------------------------------------------------------
def test_a_damaged_artifact_is_not_done_and_an_old_one_is_trusted(tmp_path, caplog):
    slot = ArtifactStore(tmp_path).slot("pretrain", {"a": 1})
    (slot.path / "encoder.pt").write_bytes(b"x" * 5000)
    (slot.path / "checkpoints").mkdir()
    (slot.path / "checkpoints" / "last.ckpt").write_bytes(b"rolling")
    slot.mark_done({"pretrain/val_loss": 1.0})
    done = json.loads((slot.path / "DONE").read_text())
    assert done["pretrain/val_loss"] == 1.0 and list(done["checksums"]) == ["encoder.pt"]
    assert slot.done
    (slot.path / "checkpoints" / "last.ckpt").write_bytes(b"the next epoch")  # not an output: not checked
    assert slot.done
    (slot.path / "encoder.pt").write_bytes(b"y" * 5000)  # same size, other bytes
    with caplog.at_level(logging.WARNING):
        assert not slot.done
    assert f"{slot.path / 'encoder.pt'} changed since it was written" in caplog.text
    assert not (slot.path / "DONE").exists() and (slot.path / "DONE.invalid").is_file()
    # a DONE written before checksums existed: trusted, and its checksums recorded from now on
    (slot.path / "DONE").write_text(json.dumps({"pretrain/val_loss": 1.0}))
    assert slot.done and "checksums" in json.loads((slot.path / "DONE").read_text())
    with open(slot.path / "encoder.pt", "r+b") as f:
        f.truncate(1000)
    assert not slot.done


def test_a_truncated_dataset_cache_is_generated_again_with_a_warning(tmp_path, caplog):
    calls = []

    def generate():
        calls.append(1)
        return {"eeg": np.arange(20000, dtype=np.float32).reshape(100, 200), "labels": np.arange(100)}

    first = cached_npz(tmp_path, "synthetic_abc", {"seed": 0}, generate)
    path = tmp_path / "synthetic_abc.npz"
    assert json.loads(path.with_suffix(".json").read_text())["file"]["size"] == path.stat().st_size
    assert cached_npz(tmp_path, "synthetic_abc", {"seed": 0}, generate)["eeg"].sum() == first["eeg"].sum()
    assert len(calls) == 1
    with open(path, "r+b") as f:  # cut to 1 kB, as a full disk or a copy that stopped leaves it
        f.truncate(1024)
    with caplog.at_level(logging.WARNING):
        again = cached_npz(tmp_path, "synthetic_abc", {"seed": 0}, generate)
    assert len(calls) == 2 and np.array_equal(again["eeg"], first["eeg"])
    assert f"dataset cache {path} has 1024 bytes" in caplog.text
    assert cached_npz(tmp_path, "synthetic_abc", {"seed": 0}, generate) and len(calls) == 2  # valid again
    # a cache written before checksums existed (its .json is the bare config), cut short: unreadable, rebuilt
    path.with_suffix(".json").write_text(json.dumps({"seed": 0}))
    with open(path, "r+b") as f:
        f.truncate(1024)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cached_npz(tmp_path, "synthetic_abc", {"seed": 0}, generate)
    assert len(calls) == 3 and f"dataset cache {path} is unreadable" in caplog.text


def test_a_damaged_array_of_a_conversion_cache_is_rebuilt_with_a_warning(tmp_path, caplog):
    source = tmp_path / "source.bin"
    source.write_bytes(b"eeg" * 1000)
    calls = []

    def fill(writer):
        calls.append(1)
        writer.save("x", np.ones((64, 64), np.float32))

    cache = lambda: ArrayCache(tmp_path / "c", "ds", {"a": 1}, {"eeg": source})  # noqa: E731
    entry = cache().get_or_build(fill)
    spec = json.loads((entry.path / "manifest.json").read_text())["arrays"]["x"]
    assert spec["size"] == (entry.path / "x.npy").stat().st_size and len(spec["sha256"]) == 64
    data = bytearray((entry.path / "x.npy").read_bytes())
    data[-10:] = b"0123456789"  # same size, other bytes (inside the sampled end)
    (entry.path / "x.npy").write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert cache().get_or_build(fill).status == "built"
    assert len(calls) == 2 and "is damaged" in caplog.text and "x.npy changed" in caplog.text


# -- a full disk --------------------------------------------------------------------------------------
def disk_full_after(nbytes: int):
    """A writer that writes ``nbytes`` of its output, then fails as a full disk does."""

    def write(file, *args, **kwargs):
        with open(file, "wb") as f:
            f.write(b"\0" * nbytes)
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


def test_a_full_disk_while_writing_the_dataset_cache_is_one_line_and_nothing_is_marked_complete(tmp_path, monkeypatch):
    def generate():
        return {"eeg": np.zeros((100, 200), np.float32)}

    monkeypatch.setattr(np, "savez", disk_full_after(1000))
    with pytest.raises(DiskFullError) as caught:
        cached_npz(tmp_path / "cache", "synthetic_abc", {"seed": 0}, generate)
    text = format_user_error(caught.value)
    assert "\n" not in text and f"in {tmp_path / 'cache'} failed" in text and "0.1 MB needed" in text
    assert not list((tmp_path / "cache").iterdir())  # no cache, no marker, no partial file
    monkeypatch.undo()  # space freed: the same call completes
    assert cached_npz(tmp_path / "cache", "synthetic_abc", {"seed": 0}, generate)["eeg"].shape == (100, 200)
    assert (tmp_path / "cache" / "synthetic_abc.json").is_file()


def test_a_full_disk_while_marking_an_artifact_done_leaves_it_not_done(tmp_path, monkeypatch):
    import regionaldiff.artifacts as artifacts

    slot = ArtifactStore(tmp_path).slot("pretrain", {"a": 1})
    (slot.path / "encoder.pt").write_bytes(b"x" * 100)
    real_replace = artifacts.os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts.os, "replace", full)
    with pytest.raises(DiskFullError, match=f"in {slot.path} failed"):
        slot.mark_done()
    assert not slot.done and [p.name for p in slot.path.iterdir() if p.name.startswith(".DONE")] == []
    monkeypatch.setattr(artifacts.os, "replace", real_replace)
    slot.mark_done()
    assert slot.done


# -- the pipeline's own steps ---------------------------------------------------------------------------
SMALL = [
    *TINY,
    "dataset.n_train=24",
    "dataset.n_val=8",
    "dataset.n_test=8",
    "encoder.max_epochs=1",
    "logger=none",
    "pipeline.steps=[prepare,pretrain]",
]


def pretrain_once(compose_cfg, *overrides: str):
    """``prepare`` and ``pretrain`` of a fresh job (as a later job of a sweep runs them); its context."""
    from regionaldiff.runner import build_context
    from regionaldiff.steps.prepare import prepare
    from regionaldiff.steps.pretrain import pretrain
    from regionaldiff.validation import validate

    cfg = compose_cfg(*SMALL, *overrides)
    ctx = build_context(cfg, validate(cfg), JobTracker(False, "sqlite://", "x", Path("."), "x"))
    prepare(ctx)
    pretrain(ctx)
    return ctx


def test_a_truncated_encoder_is_trained_again_once_and_then_reused(compose_cfg, caplog):
    from regionaldiff.steps.pretrain import load_encoder

    ctx = pretrain_once(compose_cfg)
    weights = ctx.slots["pretrain"].path / "encoder.pt"
    with open(weights, "r+b") as f:
        f.truncate(1024)
    with caplog.at_level(logging.WARNING):
        rebuilt = pretrain_once(compose_cfg)  # the first job of the sweep after the damage: warned, trained again
    assert f"{weights} has 1024 bytes" in caplog.text and "building it again" in caplog.text
    load_encoder(rebuilt)  # readable again
    stamp = weights.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO):
        pretrain_once(compose_cfg)  # the next job sees the rebuilt one as valid
    assert "reusing encoder" in caplog.text and weights.stat().st_mtime_ns == stamp


def test_a_full_disk_while_saving_the_encoder_is_one_line_and_the_rerun_resumes(compose_cfg, monkeypatch, caplog):
    import torch

    from regionaldiff.runner import run_pipeline
    from regionaldiff.validation import validate

    real_save = torch.save
    monkeypatch.setattr(
        torch,
        "save",
        lambda obj, f, *a, **k: (
            disk_full_after(500)(f) if str(f).endswith("encoder.pt") else real_save(obj, f, *a, **k)
        ),
    )
    cfg = compose_cfg(*SMALL)
    with pytest.raises(DiskFullError) as caught:
        run_pipeline(cfg, validate(cfg), JobTracker(False, "sqlite://", "x", Path("."), "x"))
    slots = list((Path(cfg.paths.artifact_dir) / "pretrain").iterdir())
    assert len(slots) == 1 and not (slots[0] / "DONE").exists()  # the half-written encoder is not complete
    text = format_user_error(caught.value)
    assert "\n" not in text and f"writing the pretrain step's output in {slots[0]} failed" in text and "free" in text
    monkeypatch.undo()
    with caplog.at_level(logging.INFO):
        run_pipeline(cfg, validate(cfg), JobTracker(False, "sqlite://", "x", Path("."), "x"))
    assert "resuming from" in caplog.text and (slots[0] / "DONE").is_file()


def test_a_sweep_whose_server_is_away_at_its_end_still_gets_its_summary_and_exit_status(tmp_path, monkeypatch):
    from regionaldiff.sweeps.summary import finish_sweep, write_job_status

    for name, value in HTTP_SETTINGS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    sweep_dir = tmp_path / "sweep"
    write_job_status(sweep_dir, 0, status="FINISHED", overrides=["seed=0"], run_id="a")
    write_job_status(sweep_dir, 1, status="FAILED", reason="boom", overrides=["seed=1"], run_id="b")
    outcome = finish_sweep(f"http://127.0.0.1:{free_port()}", "exp", str(sweep_dir), [["seed=0"], ["seed=1"]])
    assert [o.status for o in outcome.jobs] == ["FINISHED", "FAILED"] and len(outcome.failed) == 1
    assert "1 of 2 failed" in (sweep_dir / "summary.md").read_text()
