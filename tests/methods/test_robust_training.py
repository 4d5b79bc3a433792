"""The robustness methods inside the real loop: cached == live teacher, method metrics, exact resume."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from robust_helpers import tiny_model
from tunelab.config import RunConfig
from tunelab.errors import ConfigError
from tunelab.training import build_accelerator, prepare_inputs, resolve, train


def _run(cfg: RunConfig, resume_from: Path | None = None, evaluate_fn=None):
    plan = resolve(cfg)
    accelerator = build_accelerator(cfg.train)
    inputs = prepare_inputs(plan)
    result = train(
        plan,
        inputs,
        accelerator,
        evaluate=evaluate_fn or (lambda m: {"accuracy": 0.5}),
        resume_from=resume_from,
    )
    return result, inputs


def test_cached_teacher_gives_the_live_loss_curve(make_config, tiny_backbone_dir, tmp_path):
    """prepare() builds the cache before the first step; with k = all labels every step's loss is the same."""
    teacher = tmp_path / "teacher"
    tiny_model(tiny_backbone_dir, ["negative", "positive"]).save_pretrained(teacher)
    curves = {}
    for name, extra in (("live", {}), ("cached", {"cache_dir": str(tmp_path / "cache")})):
        cfg = make_config(
            methods=[{"name": "distill", "params": {"teacher": str(teacher), "alpha": 0.3, **extra}}],
            train={"max_steps": 5, "output_dir": str(tmp_path / name)},
        )
        result, inputs = _run(cfg)
        curves[name] = result.losses
    assert curves["cached"] == pytest.approx(curves["live"], abs=1e-6)
    assert len(list((tmp_path / "cache").glob("teacher-*.safetensors"))) == 1
    assert len(inputs.adapted.companions["distill"].teachers) == 0


@pytest.mark.parametrize(
    ("methods", "metric"),
    [
        ([{"name": "adversarial", "params": {"attack": "fgm", "epsilon": 0.5}}], "train/adv_loss"),
        ([{"name": "adversarial", "params": {"attack": "pgd", "steps": 2}}], "train/adv_loss"),
        ([{"name": "adversarial", "params": {"attack": "freelb", "steps": 2}}], "train/adv_loss"),
        ([{"name": "rdrop", "params": {"alpha": 1.0}}], "train/rdrop_kl"),
    ],
    ids=["fgm", "pgd", "freelb", "rdrop"],
)
def test_method_trains_in_the_loop_and_logs_its_metric(make_config, methods, metric):
    cfg = make_config(methods=methods, train={"max_steps": 3, "label_smoothing": 0.1})
    result, _ = _run(cfg)
    assert result.step == 3
    assert all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())
    logged = [json.loads(line) for line in (cfg.train.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r[metric] for r in logged if metric in r]


def test_augmented_training_resumes_exactly(make_config, tmp_path):
    """Augmentation redrawn per (seed, epoch) batch: an interrupted + resumed run repeats every loss."""
    sections = {
        "data": {"augment": {"prob": 1.0, "alpha": 0.3}, "max_train_samples": 32},
        "train": {"num_train_epochs": 2, "eval_steps": 1},
    }
    full, _ = _run(make_config(**sections))
    cfg = make_config(**{**sections, "train": {**sections["train"], "output_dir": str(tmp_path / "cut")}})
    calls = {"n": 0}

    def interrupt(model):
        calls["n"] += 1
        if calls["n"] == 6:  # mid second epoch (4 steps per epoch)
            os.kill(os.getpid(), signal.SIGINT)
        return {"accuracy": 0.5}

    first, _ = _run(cfg, evaluate_fn=interrupt)
    assert first.stopped == "interrupted"
    resumed, _ = _run(cfg, resume_from=first.checkpoint)
    for step, loss in resumed.losses.items():
        assert loss == pytest.approx(full.losses[step], abs=1e-6), step
    plain_sections = {
        "data": {"max_train_samples": 32},
        "train": {"max_steps": 1, "output_dir": str(tmp_path / "p")},
    }
    plain, _ = _run(make_config(**plain_sections))
    assert plain.losses[1] != pytest.approx(full.losses[1], abs=1e-6)  # the augmentation did change the rows


def test_two_step_methods_are_refused_with_the_reason(make_config):
    cfg = make_config(methods=[{"name": "distill", "params": {"teacher": "."}}, {"name": "rdrop"}])
    with pytest.raises(ConfigError, match="distill and rdrop each replace the training step"):
        resolve(cfg)


def test_augmentation_refuses_a_cached_teacher(make_config, tmp_path):
    cfg = make_config(
        data={"augment": {"ops": ["swap"]}},
        methods=[{"name": "distill", "params": {"teacher": ".", "cache_dir": str(tmp_path)}}],
    )
    with pytest.raises(ConfigError, match=r"methods\[0\]\.params\.cache_dir: the teacher cache holds"):
        resolve(cfg)


def test_label_smoothing_reaches_a_weighted_task_loss(make_config):
    """Class weights and smoothing compose: the task's own loss receives ε (no refusal, no silent drop)."""
    cfg = make_config(task={"params": {"class_weights": "balanced"}}, train={"label_smoothing": 0.1})
    plan = resolve(cfg)
    inputs = prepare_inputs(plan)
    batch = inputs.collator([inputs.train[i] for i in range(8)])
    out = inputs.adapted.model(**batch)
    weights = torch.tensor([inputs.task_params.class_weights[n] for n in inputs.labels])
    expected = torch.nn.functional.cross_entropy(
        out.logits, batch["labels"], weight=weights, label_smoothing=0.1
    )
    torch.testing.assert_close(inputs.adapted.loss(out, batch), expected)
