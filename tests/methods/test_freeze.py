"""freeze: which parameters train, layer-wise LR decay in the optimizer groups, head-first stage."""

from __future__ import annotations

import pytest
import torch

from tunelab.errors import ConfigError
from tunelab.training import build_accelerator, prepare_inputs, resolve, train


def _inputs(make_config, **params):
    plan = resolve(make_config(methods=[{"name": "freeze", "params": params}]))
    return plan, prepare_inputs(plan)


def _trainable(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_head_only_trains_the_classifier_alone(make_config):
    _, inputs = _inputs(make_config, trainable_layers=0)
    assert _trainable(inputs.adapted.model) == {"classifier.weight", "classifier.bias"}


def test_top_k_trains_the_last_layers_and_freezes_embeddings(make_config):
    _, inputs = _inputs(make_config, trainable_layers=1, frozen_modules=["*.output.LayerNorm.*"])
    trainable = _trainable(inputs.adapted.model)
    assert any(".layer.1." in n for n in trainable)
    assert not any(".layer.0." in n or "embeddings" in n or "output.LayerNorm" in n for n in trainable)
    assert {"classifier.weight", "bert.pooler.dense.weight"} <= trainable


def test_layer_lr_decay_scales_each_layer(make_config):
    plan, inputs = _inputs(make_config, layer_lr_decay=0.5)
    scale = inputs.adapted.lr_scale
    assert scale["bert.encoder.layer.1.attention.self.query.weight"] == 0.5
    assert scale["bert.encoder.layer.0.attention.self.query.weight"] == 0.25
    assert scale["bert.embeddings.word_embeddings.weight"] == 0.125
    assert "classifier.weight" not in scale
    from tunelab.training.optim import build_optimizer

    optimizer = build_optimizer(inputs.adapted.model, plan.cfg.train, scale)
    lrs = {g["lr"] for g in optimizer.param_groups}
    assert lrs == {plan.cfg.train.lr * f for f in (1.0, 0.5, 0.25, 0.125)}


def test_head_first_keeps_the_backbone_bit_identical_then_trains_it(make_config):
    cfg = make_config(
        methods=[{"name": "freeze", "params": {"head_first_steps": 3}}],
        train={"max_steps": 3, "warmup_steps": 0},
    )
    plan = resolve(cfg)
    inputs = prepare_inputs(plan)
    model = inputs.adapted.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(plan, inputs, build_accelerator(cfg.train))
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed == {"classifier.weight", "classifier.bias"}

    longer = resolve(
        make_config(methods=cfg.model_dump()["methods"], train={"max_steps": 5, "warmup_steps": 0})
    )
    inputs = prepare_inputs(longer)
    train(longer, inputs, build_accelerator(longer.cfg.train))
    after = dict(inputs.adapted.model.named_parameters())
    assert not torch.equal(
        before["bert.encoder.layer.0.attention.self.query.weight"],
        after["bert.encoder.layer.0.attention.self.query.weight"].detach(),
    )


def test_options_that_freeze_everything_are_refused(make_config):
    with pytest.raises(ConfigError, match="freeze every parameter"):
        _inputs(make_config, frozen_modules=["*"])


def test_full_and_freeze_together_are_refused(make_config):
    with pytest.raises(ConfigError, match="full and freeze each decide the trainable parameters"):
        resolve(make_config(methods=[{"name": "full"}, {"name": "freeze"}]))
