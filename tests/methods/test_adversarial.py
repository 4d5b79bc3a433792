"""Adversarial training: ε = 0 is the default step; under LoRA the embedding-output attack still acts;
the warm start trains clean first and survives a resume."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from robust_helpers import NO_DROPOUT, assert_same_grads, clone, run_step, tiny_model, toy_batch
from tunelab.methods import adversarial
from tunelab.methods.spec import Adapted, OptimizerStepContext, default_step

LABELS = ["negative", "positive"]


def _attacked(model, **params) -> Adapted:
    """The attack from the first step (no warm start)."""
    return adversarial.apply(model, adversarial.Params(**({"warm_start": 0.0} | params)), ())


@pytest.mark.parametrize("attack", ["fgm", "pgd"])
def test_zero_epsilon_equals_the_default_step(tiny_backbone_dir, attack):
    model = tiny_model(tiny_backbone_dir, LABELS, **NO_DROPOUT)
    batch = toy_batch(tiny_backbone_dir, 6, 2)
    plain, plain_grads = run_step(default_step, Adapted(model=clone(model)), batch)
    adv, adv_grads = run_step(adversarial.step, _attacked(model, attack=attack, epsilon=0.0), batch)
    torch.testing.assert_close(adv.loss, plain.loss)
    torch.testing.assert_close(adv.metrics["adv_loss"], plain.loss)
    assert_same_grads(adv_grads, plain_grads)


def _lora(model):
    config = LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"])
    return get_peft_model(model, config)


@pytest.mark.parametrize("attack", ["fgm", "pgd", "freelb"])
def test_attack_changes_loss_and_gradients_under_lora(tiny_backbone_dir, attack):
    """With frozen embeddings the attack still raises the loss and changes the LoRA gradients."""
    model = _lora(tiny_model(tiny_backbone_dir, LABELS, **NO_DROPOUT))
    batch = toy_batch(tiny_backbone_dir, 6, 2)
    clean, clean_grads = run_step(
        adversarial.step, _attacked(clone(model), attack=attack, epsilon=0.0), batch
    )
    out, grads = run_step(adversarial.step, _attacked(model, attack=attack, epsilon=5.0, alpha=2.0), batch)
    assert float(out.metrics["adv_loss"]) > float(clean.metrics["adv_loss"])
    lora = [n for n in grads if "lora_" in n]
    assert lora
    assert all(not n.endswith("word_embeddings.weight") for n in grads)
    changed = [n for n in lora if not torch.allclose(grads[n], clean_grads[n], atol=1e-7)]
    assert changed, "the perturbation did not reach the trainable (LoRA) parameters"


def test_weight_perturbing_snippet_is_a_no_op_under_lora(tiny_backbone_dir):
    """The usual FGM snippet (perturb word_embeddings.weight by its grad) has nothing to act on here."""
    model = _lora(tiny_model(tiny_backbone_dir, LABELS, **NO_DROPOUT))
    batch = toy_batch(tiny_backbone_dir, 6, 2)
    model(**batch).loss.backward()
    weight = model.get_input_embeddings().weight
    assert weight.grad is None  # so `weight.data.add_(eps * grad / norm)` cannot be computed at all


def test_freelb_loss_is_the_mean_over_ascent_steps_and_grads_finite(tiny_backbone_dir):
    model = tiny_model(tiny_backbone_dir, LABELS, **NO_DROPOUT)
    batch = toy_batch(tiny_backbone_dir, 6, 2)
    plain, _ = run_step(default_step, Adapted(model=clone(model)), batch)
    out, grads = run_step(
        adversarial.step, _attacked(model, attack="freelb", epsilon=1.0, steps=3, init_magnitude=0.5), batch
    )
    assert torch.isfinite(out.loss)
    assert float(out.loss) > float(plain.loss)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_perturbation_is_zero_on_padding_and_inside_the_ball():
    grad = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]).unsqueeze(-1).float()
    direction = adversarial.normalized(grad, mask)
    assert torch.all(direction[mask.expand_as(grad) == 0] == 0)
    torch.testing.assert_close(direction.pow(2).sum((1, 2)), torch.ones(3))
    projected = adversarial.project(7.0 * direction, 2.0)
    torch.testing.assert_close(projected.pow(2).sum((1, 2)).sqrt(), torch.full((3,), 2.0))
    small = adversarial.project(0.5 * direction, 2.0)
    torch.testing.assert_close(small, 0.5 * direction)


def _hook(adapted: Adapted, params: adversarial.Params, step: int, total: int) -> None:
    adversarial.on_optimizer_step(adapted, params, OptimizerStepContext(step, total, lambda t: t))


def test_warm_start_trains_clean_until_its_share_of_the_steps_is_done(tiny_backbone_dir):
    """warm_start 0.5 of 10 steps: plain steps (default grads, no adv_loss) up to step 5, FGM after it."""
    model = tiny_model(tiny_backbone_dir, LABELS, **NO_DROPOUT)
    batch = toy_batch(tiny_backbone_dir, 6, 2)
    params = adversarial.Params(epsilon=5.0, warm_start=0.5)
    adapted = adversarial.apply(model, params, ())
    plain, plain_grads = run_step(default_step, Adapted(model=clone(model)), batch)
    for done in (0, 4):
        if done:
            _hook(adapted, params, done, 10)
        out, grads = run_step(adversarial.step, adapted, batch)
        assert "adv_loss" not in out.metrics
        assert_same_grads(grads, plain_grads)
    _hook(adapted, params, 5, 10)
    out, grads = run_step(adversarial.step, adapted, batch)
    assert float(out.metrics["adv_loss"]) > float(plain.loss)
    assert any(not torch.allclose(grads[n], plain_grads[n], atol=1e-7) for n in grads)


def test_warm_start_state_survives_a_resume(tiny_backbone_dir):
    """A resumed run restores whether the attack had started (the hook only runs after its first step)."""
    model = tiny_model(tiny_backbone_dir, LABELS, **NO_DROPOUT)
    params = adversarial.Params(warm_start=0.2)
    before = adversarial.apply(model, params, ())
    _hook(before, params, 3, 10)
    state = before.companions["adversarial"].run_state(model)
    resumed = adversarial.apply(model, params, ())
    assert not resumed.companions["adversarial"].started
    resumed.companions["adversarial"].restore(model, state)
    assert resumed.companions["adversarial"].started
    assert adversarial.apply(model, adversarial.Params(warm_start=0.0), ()).companions["adversarial"].started
