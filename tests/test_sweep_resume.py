"""A training step interrupted between epochs and resumed from its last checkpoint ends with the same weights as an
uninterrupted one (the random generators' states travel with the checkpoint)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

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
