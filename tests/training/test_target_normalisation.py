"""Gradient accumulation normalises by the step's total targets: 4 micro-batches x 2 == one batch of 8."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from toy_tasks import TOY_TASKS
from tunelab.config import validate_config
from tunelab.methods.spec import default_step
from tunelab.training import build_accelerator, prepare_inputs, resolve, train
from tunelab.training.loop import _accumulate
from tunelab.training.tracking import LogWindow


def sft_config(tmp_path: Path, name: str, **train_cfg):
    sections = TOY_TASKS["causal_lm"](tmp_path)
    return validate_config(
        {
            **sections,
            "train": {
                "output_dir": str(tmp_path / name),
                "lr": 1e-2,
                "max_steps": 1,
                "save_steps": 1000,
                "seed": 7,
                "group_by_length": False,
                "max_grad_norm": None,
                **train_cfg,
            },
        }
    )


def step_gradients(tmp_path: Path, group: list[list[int]], weighting=None):
    """Gradients and logged loss of one optimizer step over ``group`` (micro-batches of row indices)."""
    plan = resolve(sft_config(tmp_path, "grads"))
    accelerator = build_accelerator(plan.cfg.train)
    inputs = prepare_inputs(plan)
    count = weighting or partial(plan.task.count_targets, params=inputs.task_params)
    model = inputs.adapted.model
    model.zero_grad()
    window = LogWindow(accelerator.device)
    loss, _ = _accumulate(inputs, default_step, accelerator, model, group, torch.Generator(), window, count)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, inputs


def test_accumulation_4x2_equals_batch_8_in_loss_and_gradients(tmp_path):
    rows = list(range(8))
    loss8, grads8, inputs = step_gradients(tmp_path, [rows])
    loss42, grads42, _ = step_gradients(tmp_path, [rows[i : i + 2] for i in range(0, 8, 2)])
    lengths = [sum(label != -100 for label in inputs.train[i]["labels"]) for i in rows]
    assert len(set(lengths)) > 2, "the toy responses must be ragged for this test to mean anything"
    torch.testing.assert_close(loss42, loss8, rtol=1e-5, atol=1e-5)
    for name, grad in grads8.items():
        torch.testing.assert_close(grads42[name], grad, rtol=1e-5, atol=1e-6)
    # a plain mean of micro-batch means (every micro-batch weighted alike) would not match
    _, plain, _ = step_gradients(
        tmp_path, [rows[i : i + 2] for i in range(0, 8, 2)], weighting=lambda batch: torch.tensor(1)
    )
    assert any(not torch.allclose(plain[n], g, rtol=1e-3, atol=1e-6) for n, g in grads8.items())


@pytest.mark.parametrize("packing", [False, True])
def test_accumulated_run_takes_the_same_step_as_one_batch(tmp_path, packing):
    """Through the real loop: logged loss and next-step weights of 4 x 2 equal those of 1 x 8."""

    def run(name: str, batch_size: int, accumulation: int):
        cfg = sft_config(tmp_path, name, batch_size=batch_size, gradient_accumulation_steps=accumulation)
        task = cfg.task.model_copy(update={"params": {"max_length": 96, "packing": packing}})
        cfg = cfg.model_copy(update={"task": task})
        plan = resolve(cfg)
        inputs = prepare_inputs(plan)
        result = train(plan, inputs, build_accelerator(plan.cfg.train))
        return result.losses[1], {n: p.detach() for n, p in inputs.adapted.model.named_parameters()}

    loss8, weights8 = run("one", 8, 1)
    loss42, weights42 = run("four", 2, 4)
    assert loss42 == pytest.approx(loss8, abs=1e-5)
    for name, weight in weights8.items():
        torch.testing.assert_close(weights42[name], weight, rtol=1e-5, atol=1e-5)
