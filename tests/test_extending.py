"""The worked example of docs/extending.md: a second conditioner is one module, one YAML and this test.

``regionaldiff.ldm.attention_pool.AttentionPoolConditioner`` + ``conf/ldm/conditioner/attention_pool.yaml``: it
composes and validates, is built from its ``_target_`` with the sizes the encoder and UNet give, trains (gradients
reach it), and a whole run with it is loaded back by ``RegionalDiffPipeline``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import TINY
from regionaldiff.components import build_ldm, check_component
from regionaldiff.ldm.attention_pool import AttentionPoolConditioner
from regionaldiff.validation import validate


def test_the_new_conditioner_is_selected_validated_and_built_from_config(compose_cfg):
    typed = validate(compose_cfg("ldm/conditioner=attention_pool"))
    assert typed.ldm.conditioner["_target_"].endswith("AttentionPoolConditioner")
    ldm = build_ldm(
        typed.ldm, latent_channels=48, code_len=25, code_dim=64, num_classes=5, image_size=32, latent_size=8
    )
    assert isinstance(ldm.conditioner, AttentionPoolConditioner)
    codes, logits = torch.randn(3, 25, 64), torch.randn(3, 5)
    context = ldm.conditioner(codes, logits)
    assert context.shape == (3, 8, 64)  # n_tokens x the UNet's cross_attention_dim
    # each trial's tokens read that trial's codes
    other = ldm.conditioner(torch.cat([codes[:1], torch.randn(2, 25, 64)]), logits)
    assert torch.allclose(context[0], other[0], atol=1e-6) and not torch.allclose(context[1], other[1])
    # the denoising loss trains it
    loss = ldm.training_loss(torch.randn(3, 48, 8, 8), context, torch.rand(3, 6, 8, 8).softmax(1))
    loss.backward()
    assert ldm.conditioner.queries.grad is not None and ldm.conditioner.queries.grad.abs().sum() > 0


def test_bad_values_of_the_new_component_fail_before_any_work(compose_cfg):
    with pytest.raises(ValueError, match=r"ldm.conditioner.num_heads and ldm.conditioner.depth must be >= 1"):
        validate(compose_cfg("ldm/conditioner=attention_pool", "ldm.conditioner.depth=0"))
    node = OmegaConf.to_container(compose_cfg("ldm/conditioner=attention_pool").ldm.conditioner)
    with pytest.raises(ValueError, match=r"ldm.conditioner.heads is not an argument of .*AttentionPoolConditioner"):
        check_component({**node, "heads": 2}, "ldm.conditioner")
    with pytest.raises(ValueError, match="ldm.conditioner.code_len is set from the data"):
        check_component({**node, "code_len": 3}, "ldm.conditioner")
    with pytest.raises(ValueError, match=r"ldm.conditioner._target_='nope.Missing' cannot be imported"):
        check_component({"_target_": "nope.Missing"}, "ldm.conditioner")


@pytest.mark.slow
def test_a_run_with_the_new_conditioner_loads_into_the_pipeline(run_cli, tmp_path):
    from regionaldiff.reconstruction import RegionalDiffPipeline

    run_cli(*TINY, "ldm/conditioner=attention_pool", "logger=none", "hydra.run.dir=outputs/runs/pool")
    job = tmp_path / "outputs" / "runs" / "pool"
    card = json.loads((Path(json.loads((job / "model.json").read_text())["model_dir"]) / "pipeline.json").read_text())
    assert card["ldm"]["conditioner"]["_target_"].endswith("AttentionPoolConditioner")
    pipe = RegionalDiffPipeline.from_pretrained(job)
    assert isinstance(pipe.ldm.conditioner, AttentionPoolConditioner)
    out = pipe(torch.randn(2, 17, 100), generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 1, 32, 32, 3)
