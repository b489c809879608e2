"""trainer.limit_train_batches: rehearsals at full data size train a few batches per epoch, and their artifacts never
stand in for a full run's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from regionaldiff.artifacts import ArtifactStore
from regionaldiff.errors import ConfigError
from regionaldiff.steps.training import make_trainer, training_limits
from regionaldiff.validation import validate


def test_limit_reaches_the_trainer_and_the_artifact_keys(compose_cfg, tmp_path):
    full = validate(compose_cfg())
    limited = validate(compose_cfg("trainer.limit_train_batches=3"))
    assert full.trainer.limit_train_batches is None and limited.trainer.limit_train_batches == 3
    assert training_limits(SimpleNamespace(typed=full)) == {}  # full runs keep their artifact keys
    assert training_limits(SimpleNamespace(typed=limited)) == {"limit_train_batches": 3}
    ctx = SimpleNamespace(typed=limited, tracker=SimpleNamespace(lightning_logger=lambda: None))
    slot = ArtifactStore(tmp_path).slot("pretrain", {"k": 1})
    assert make_trainer(ctx, slot, max_epochs=1).limit_train_batches == 3
    ctx_full = SimpleNamespace(typed=full, tracker=ctx.tracker)
    assert make_trainer(ctx_full, slot, max_epochs=1).limit_train_batches == 1.0


def test_a_bad_limit_names_the_key(compose_cfg):
    with pytest.raises(ConfigError, match="trainer.limit_train_batches must be > 0"):
        validate(compose_cfg("trainer.limit_train_batches=0"))
