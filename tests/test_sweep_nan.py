"""A non-finite training loss stops the step with an error naming the step and the epoch; the last good checkpoint
(of the last finite epoch) is kept and nothing is saved as the step's result."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from regionaldiff.errors import TrainingDivergedError, UserError
from regionaldiff.steps.training import StopOnNonFiniteLoss


class Toy(L.LightningModule):
    """A linear fit whose loss becomes NaN from epoch ``nan_epoch`` on (or a weight, with ``weights=True``)."""

    def __init__(self, nan_epoch: int, weights: bool = False) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)
        self.nan_epoch, self.weights = nan_epoch, weights

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.lin(x), y)
        if self.current_epoch >= self.nan_epoch:
            if self.weights:
                if batch_idx == 1:  # the epoch's last batch: its loss was finite, the weight is not
                    with torch.no_grad():
                        self.lin.weight[0, 0] = float("inf")
            else:
                loss = loss * float("nan")
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(tmp_path, module):
    data = torch.utils.data.TensorDataset(torch.randn(8, 2), torch.randn(8, 1))
    ckpt = tmp_path / "pretrain" / "abc" / "checkpoints" / "last.ckpt"
    trainer = L.Trainer(
        max_epochs=5,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            StopOnNonFiniteLoss("pretrain", ckpt),
            ModelCheckpoint(dirpath=str(ckpt.parent), filename="last", save_top_k=1, enable_version_counter=False),
        ],
    )
    with pytest.raises(TrainingDivergedError) as info:
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    return ckpt, str(info.value)


def test_nan_loss_stops_the_step_naming_step_and_epoch_and_keeps_the_last_good_checkpoint(tmp_path):
    ckpt, message = _fit(tmp_path, Toy(nan_epoch=2))
    assert message.startswith("pretrain: the training loss became nan at epoch 2 (batch 0); training stopped")
    assert f"the last good checkpoint (end of epoch 1) is kept at {ckpt}" in message
    saved = torch.load(ckpt, weights_only=False)
    assert saved["epoch"] == 1  # the checkpoint of the last finite epoch, not overwritten
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    assert issubclass(TrainingDivergedError, UserError)


def test_non_finite_weights_are_caught_before_the_epoch_is_checkpointed(tmp_path):
    ckpt, message = _fit(tmp_path, Toy(nan_epoch=1, weights=True))
    # every loss was finite: the weight check at the end of the epoch catches it
    assert message.startswith("pretrain: the weight lin.weight became non-finite at epoch 1; training stopped")
    saved = torch.load(ckpt, weights_only=False)
    assert saved["epoch"] == 0 and all(torch.isfinite(v).all() for v in saved["state_dict"].values())


def test_no_checkpoint_yet_is_said(tmp_path):
    _, message = _fit(tmp_path, Toy(nan_epoch=0))
    assert "at epoch 0" in message and "no checkpoint had been written yet" in message
