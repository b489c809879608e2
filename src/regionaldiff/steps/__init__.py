"""The pipeline's steps, one module each: prepare -> pretrain -> finetune -> generate -> evaluate.

Each step is a function ``step(ctx: PipelineContext, train: bool) -> None`` that produces (``train=True``) or
loads (``train=False``, when only a later step was asked for) its artifact; :mod:`regionaldiff.runner` runs them.
"""
