"""EWC: the penalty is 0 at the previous weights, equals λ/2·ΣF·δ² after a known perturbation, and its
gradient λ·F·(θ − θ_A) pulls back toward them; the new labels' head rows carry no Fisher."""

from __future__ import annotations

import pytest
import torch

from toy_tasks import continual_run_config
from tunelab.training import prepare_inputs, resolve

STRENGTH = 50.0


@pytest.fixture
def consolidated(tiny_backbone_no_dropout_dir, tmp_path):
    methods = [
        {"name": "ewc", "params": {"strength": STRENGTH, "fisher_samples": 24, "fisher_batch_size": 4}}
    ]
    inputs = prepare_inputs(resolve(continual_run_config(tiny_backbone_no_dropout_dir, tmp_path, methods)))
    return inputs.adapted.model, inputs.adapted.companions["ewc"]


def test_penalty_is_zero_at_the_previous_weights(consolidated):
    model, state = consolidated
    assert float(state.penalty(model).detach()) == 0.0
    assert sum(float(f.sum()) for f in state.fisher.values()) > 0


def test_penalty_equals_the_hand_computation_after_a_perturbation(consolidated):
    model, state = consolidated
    name, param = "bert.encoder.layer.0.attention.self.query.weight", dict(model.named_parameters())
    delta = torch.linspace(-0.1, 0.1, param[name].numel()).reshape(param[name].shape)
    with torch.no_grad():
        param[name] += delta
    expected = STRENGTH / 2 * float((state.fisher[name].double() * delta.double() ** 2).sum())
    assert float(state.penalty(model).detach()) == pytest.approx(expected, rel=1e-5)


def test_penalty_gradient_pulls_toward_the_previous_weights(consolidated):
    model, state = consolidated
    named = dict(model.named_parameters())
    with torch.no_grad():
        for p in named.values():
            p += 0.05 * torch.randn_like(p)
    model.zero_grad()
    state.penalty(model).backward()
    for name, p in named.items():
        expected = STRENGTH * state.fisher[name] * (p.detach() - state.anchor[name])
        torch.testing.assert_close(p.grad, expected)
    distance = float(state.penalty(model).detach())
    with torch.no_grad():
        for p in named.values():
            p -= 1e-3 * p.grad
    assert float(state.penalty(model).detach()) < distance


def test_new_label_rows_get_no_fisher(consolidated):
    _, state = consolidated
    head = state.fisher["classifier.weight"]
    assert head.shape[0] == 4
    assert float(head[:2].abs().sum()) > 0
    assert float(head[2:].abs().sum()) == 0.0
    assert float(state.fisher["classifier.bias"][2:].abs().sum()) == 0.0


def test_fisher_is_the_mean_squared_per_row_gradient_with_batches_of_one(
    tiny_backbone_no_dropout_dir, tmp_path
):
    """``fisher_batch_size: 1`` is the empirical Fisher exactly: the mean over rows of each row's squared
    gradient of A's loss (A's label columns only); larger batches scale each batch's squared gradient by
    its size, as the module says."""
    from tunelab.methods.ewc import diagonal_fisher, restricted_loss

    methods = [{"name": "ewc", "params": {"fisher_samples": 6, "fisher_batch_size": 1}}]
    inputs = prepare_inputs(resolve(continual_run_config(tiny_backbone_no_dropout_dir, tmp_path, methods)))
    model, previous = inputs.adapted.model, inputs.adapted.previous
    rows = previous.train_rows(6, 0)
    name = "bert.encoder.layer.1.output.dense.weight"
    param = dict(model.named_parameters())[name]

    def squared_gradient(batch_rows):
        batch = previous.collator(batch_rows)
        model.zero_grad()
        inputs_ = {k: v for k, v in batch.items() if k != "labels"}
        restricted_loss(model(**inputs_).logits, batch["labels"], 2).backward()
        return param.grad.detach().pow(2).clone()

    per_row = sum(squared_gradient([row]) for row in rows) / len(rows)
    torch.testing.assert_close(inputs.adapted.companions["ewc"].fisher[name], per_row)
    pairs = [previous.collator(rows[i : i + 2]) for i in (0, 2, 4)]
    per_pair = sum(2 * squared_gradient(rows[i : i + 2]) for i in (0, 2, 4)) / 3
    torch.testing.assert_close(diagonal_fisher(model, pairs, 2)[name], per_pair)
    assert not torch.allclose(per_pair, per_row)  # the two estimators differ: the test tells them apart
