"""A training step interrupted between epochs and resumed from its last checkpoint ends with the same weights as an
uninterrupted one (the random generators' states travel with the checkpoint)."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from conftest import TINY, cli_env, mlflow_runs
from regionaldiff.steps.training import RandomStateInCheckpoint


class Noisy(L.LightningModule):
    """Dropout, shuffled batches and random masking: every source of randomness a training step has."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        mask = (torch.rand_like(x) > 0.25).float()
        return torch.nn.functional.mse_loss(self.net(x * mask), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val", torch.nn.functional.mse_loss(self.net(x * (torch.rand_like(x) > 0.25)), y))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=0.01)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)}


class Preempt(L.Callback):
    """Ends the process's training after ``epoch`` (the checkpoint of that epoch written), as a preemption would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch + 1:
            raise SystemExit("preempted")


def _train(folder, stop_after=None, resume=False):
    L.seed_everything(0)
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True)
    val = torch.utils.data.DataLoader(data, batch_size=16)
    module = Noisy()
    callbacks = [
        RandomStateInCheckpoint(),
        ModelCheckpoint(dirpath=str(folder), filename="last", save_top_k=1, enable_version_counter=False),
    ]
    if stop_after is not None:
        callbacks.append(Preempt(stop_after))
    trainer = L.Trainer(
        max_epochs=4,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    trainer.fit(module, loader, val, ckpt_path=str(folder / "last.ckpt") if resume else None)
    return module


def test_a_step_resumed_from_its_checkpoint_ends_as_an_uninterrupted_one(tmp_path):
    reference = _train(tmp_path / "a")
    with pytest.raises(SystemExit):
        _train(tmp_path / "b", stop_after=1)
    assert torch.load(tmp_path / "b" / "last.ckpt", weights_only=False)["epoch"] == 1
    resumed = _train(tmp_path / "b", resume=True)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def _descendants_running(pid: int, marker: str) -> list:
    import psutil

    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if any(marker in part for part in child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None, reason="needs hydra-submitit-launcher"
)
def test_a_preempted_submitit_job_is_requeued_resumes_and_ends_as_an_uninterrupted_one(tmp_path):
    """submitit's local executor, USR2 (SLURM's preemption / time-limit signal) while the encoder trains: the job is
    requeued, resumes from its last checkpoint, and its encoder equals the one of an uninterrupted sweep."""
    pytest.importorskip("psutil")
    args = ["-m", "hydra/launcher=submitit_local_test", "seed=0", *TINY, "pipeline.steps=[prepare,pretrain]"]
    args += ["encoder.max_epochs=4"]
    env = cli_env()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    command = [sys.executable, "-m", "regionaldiff", *args]
    done = subprocess.run(command, cwd=tmp_path / "a", env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    proc = subprocess.Popen(
        command, cwd=tmp_path / "b", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.time() + 300
        ckpts: list[Path] = []
        while time.time() < deadline and not ckpts and proc.poll() is None:
            ckpts = list((tmp_path / "b" / "outputs" / "artifacts" / "pretrain").glob("*/checkpoints/last.ckpt"))
            time.sleep(0.2)
        assert ckpts, "the encoder never wrote a checkpoint"
        tasks = _descendants_running(proc.pid, "submitit.core._submit")
        assert tasks, "no submitit task process found"
        for task in tasks:
            task.send_signal(signal.SIGUSR2)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    assert "Sweep summary: all 1 finished" in out
    logs = "".join(p.read_text() for p in (tmp_path / "b").glob("outputs/multiruns/*/.submitit/*/*_log.*"))
    assert "Requeued" in logs or "requeue" in logs.lower(), logs[-3000:]
    assert "resuming from" in logs, logs[-3000:]

    def encoder(root: Path) -> dict:
        (path,) = (root / "outputs" / "artifacts" / "pretrain").glob("*/encoder.pt")
        return torch.load(path, weights_only=False)["state_dict"]

    reference, resumed = encoder(tmp_path / "a"), encoder(tmp_path / "b")
    assert reference.keys() == resumed.keys()
    for name in reference:
        assert torch.equal(reference[name], resumed[name]), name
    # MLflow: the interrupted attempt KILLED, the requeued one FINISHED, one parent FINISHED
    _, runs = mlflow_runs(tmp_path / "b")
    children = sorted(r.info.status for r in runs if r.data.tags.get("mlflow.parentRunId"))
    assert children == ["FINISHED", "KILLED"]
    assert [r.info.status for r in runs if r.data.tags.get("regionaldiff.role") == "sweep"] == ["FINISHED"]
