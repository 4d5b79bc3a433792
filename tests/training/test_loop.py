"""The training loop: it learns, resumes exactly, checkpoints atomically, stops early, handles signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tunelab.config import RunConfig
from tunelab.errors import CheckpointError
from tunelab.evaluation import evaluate
from tunelab.training import TrainResult, build_accelerator, prepare_inputs, resolve, train
from tunelab.training.checkpoint import (
    STATE_FILE,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def run(cfg: RunConfig, resume_from: Path | None = None, evaluate_fn: Callable | None = None, on_best=None):
    plan = resolve(cfg)
    accelerator = build_accelerator(cfg.train)
    inputs = prepare_inputs(plan)
    if evaluate_fn is None:

        def evaluate_fn(model: torch.nn.Module) -> dict[str, Any]:
            return evaluate(model, plan.task, inputs.dev, inputs.collator, inputs.labels, 16, accelerator)

    result = train(plan, inputs, accelerator, evaluate=evaluate_fn, on_best=on_best, resume_from=resume_from)
    return result, inputs.adapted.model, accelerator


def test_train_loss_falls_and_accuracy_beats_chance(make_config):
    cfg = make_config(train={"num_train_epochs": 10, "lr": 2e-3})
    seen: list[dict[str, Any]] = []
    result, model, _ = run(cfg, on_best=lambda model, metrics, step: seen.append(dict(metrics)))
    steps = sorted(result.losses)
    first = sum(result.losses[s] for s in steps[:3]) / 3
    last = sum(result.losses[s] for s in steps[-3:]) / 3
    assert result.stopped == "completed"
    assert result.step == 120
    assert last < 0.3 * first
    assert result.best_metric is not None
    assert result.best_metric >= 0.8
    assert seen
    assert seen[-1]["accuracy"] == result.best_metric


def _interrupt_at(step: int, signum: int = signal.SIGINT) -> Callable[[torch.nn.Module], dict[str, float]]:
    """An evaluate callback that signals this process at the given evaluation number."""
    calls = {"n": 0}

    def fn(model: torch.nn.Module) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signum)
        return {"accuracy": 0.5}

    return fn


FULL = [{"name": "full"}]
MOE = [{"name": "moe", "params": {"n_routed_experts": 4, "granularity": 2, "bias_update_speed": 0.01}}]
LORA = [{"name": "lora", "params": {"r": 4}}]
HEAD_FIRST = [{"name": "freeze", "params": {"head_first_steps": 5, "layer_lr_decay": 0.5}}]
ADALORA = [{"name": "adalora", "params": {"init_r": 6, "target_r": 2}}]


@pytest.mark.parametrize(
    ("stop_at", "methods"),
    # mid-epoch, epoch boundary, mid second epoch; MoE bias; LoRA adapter; head-first stage spanning the
    # stop; AdaLoRA stopped inside its budget phase (importance averages and rank pattern must survive)
    [(3, FULL), (6, FULL), (9, FULL), (3, MOE), (3, LORA), (3, HEAD_FIRST), (6, ADALORA)],
    ids=["3-full", "6-full", "9-full", "3-moe", "3-lora", "3-head-first", "6-adalora"],
)
def test_resume_gives_identical_losses_and_weights(make_config, tmp_path: Path, stop_at: int, methods):
    """Stop at step k (SIGINT), resume from its checkpoint: every later loss and the final weights match."""
    sections = {
        "methods": methods,
        "train": {"num_train_epochs": 2, "gradient_accumulation_steps": 2, "eval_steps": 1, "lr": 1e-3},
    }
    full, full_model, _ = run(make_config(**sections), evaluate_fn=lambda m: {"accuracy": 0.5})
    assert full.step == 12

    cfg = make_config(
        **{**sections, "train": {**sections["train"], "output_dir": str(tmp_path / "interrupted")}}
    )
    first, _, _ = run(cfg, evaluate_fn=_interrupt_at(stop_at))
    assert first.stopped == "interrupted"
    assert first.step == stop_at
    assert first.signal_number == signal.SIGINT
    assert latest_checkpoint(cfg.train.output_dir) == first.checkpoint

    resumed, resumed_model, _ = run(
        cfg, resume_from=first.checkpoint, evaluate_fn=lambda m: {"accuracy": 0.5}
    )
    assert resumed.step == 12
    assert sorted(resumed.losses) == list(range(stop_at + 1, 13))
    for step, loss in resumed.losses.items():
        assert loss == pytest.approx(full.losses[step], abs=1e-6), step
    for (name, a), b in zip(
        full_model.state_dict().items(), resumed_model.state_dict().values(), strict=False
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_sigterm_saves_a_checkpoint_and_stops(make_config):
    cfg = make_config(train={"max_steps": 6, "eval_steps": 1})
    result, _, _ = run(cfg, evaluate_fn=_interrupt_at(2, signal.SIGTERM))
    assert result.stopped == "interrupted"
    assert result.signal_number == signal.SIGTERM
    assert result.step == 2
    assert latest_checkpoint(cfg.train.output_dir).name == "step-000002"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the loop restores the previous handler


def test_gradient_checkpointing_gives_the_same_losses(make_config, tmp_path: Path):
    plain, _, _ = run(make_config(train={"max_steps": 4}), evaluate_fn=lambda m: {"accuracy": 0.5})
    cfg = make_config(
        train={"max_steps": 4, "gradient_checkpointing": True, "output_dir": str(tmp_path / "gc")}
    )
    checkpointed, _, _ = run(cfg, evaluate_fn=lambda m: {"accuracy": 0.5})
    assert checkpointed.losses == pytest.approx(plain.losses, abs=1e-6)


def test_resume_refuses_changed_training_config(make_config, tmp_path: Path):
    cfg = make_config(train={"max_steps": 2, "save_steps": 1})
    result, _, _ = run(cfg, evaluate_fn=lambda m: {"accuracy": 0.5})
    changed = make_config(train={"max_steps": 2, "save_steps": 1, "lr": 1e-4})
    with pytest.raises(CheckpointError, match=r"train\.lr"):
        run(changed, resume_from=result.checkpoint)


def test_resume_refuses_a_train_file_whose_rows_changed(make_config, toy_data: dict[str, Path]):
    """Same config, other rows: refused, naming the key; the test file (scored after training) may change."""
    cfg = make_config(data={"test_file": str(toy_data["test"])}, train={"max_steps": 2, "save_steps": 1})
    result, _, _ = run(cfg, evaluate_fn=lambda m: {"accuracy": 0.5})
    train_file = Path(cfg.data.train_file)
    original = train_file.read_bytes()
    train_file.write_bytes(original[: original.rstrip().rfind(b"\n") + 1])  # same path and config, 1 row less
    with pytest.raises(CheckpointError, match=r"content of data\.train_file changed"):
        run(cfg, resume_from=result.checkpoint)
    train_file.write_bytes(original)  # the original rows: the resume goes on, with another test file
    toy_data["test"].write_bytes(toy_data["dev"].read_bytes())
    resumed, _, _ = run(cfg, resume_from=result.checkpoint, evaluate_fn=lambda m: {"accuracy": 0.5})
    assert resumed.step == 2


def test_resume_refuses_a_changed_start_model_and_takes_an_older_checkpoint(
    make_config, tiny_backbone_dir: Path, tmp_path: Path
):
    """Other start weights are refused (a LoRA checkpoint holds only its adapter); a checkpoint saved
    before the start was recorded has no such key and still resumes."""
    start = Path(shutil.copytree(tiny_backbone_dir, tmp_path / "start"))
    cfg = make_config(model={"name_or_path": str(start)}, train={"max_steps": 2, "save_steps": 1})
    result, _, _ = run(cfg, evaluate_fn=lambda m: {"accuracy": 0.5})
    assert result.checkpoint is not None
    weights = start / "model.safetensors"
    state = load_file(weights)
    name = sorted(state)[0]
    save_file({**state, name: state[name] + 1e-3}, str(weights), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"content of model\.name_or_path changed"):
        run(cfg, resume_from=result.checkpoint)
    state_file = result.checkpoint / STATE_FILE
    saved = json.loads(state_file.read_text())
    del saved["inputs"]["model.name_or_path"]  # as an older tunelab wrote it
    state_file.write_text(json.dumps(saved))
    resumed, _, _ = run(cfg, resume_from=result.checkpoint, evaluate_fn=lambda m: {"accuracy": 0.5})
    assert resumed.step == 2


def test_checkpoint_crash_mid_write_keeps_previous_loadable(make_config, monkeypatch):
    cfg = resolve(make_config(train={"max_steps": 1})).cfg  # the resolved config is what a run saves
    result, _, accelerator = run(cfg, evaluate_fn=lambda m: {"accuracy": 0.5})
    good = result.checkpoint
    assert good is not None
    assert good.name == "step-000001"

    def crashing_save_state(output_dir: str, **kwargs: Any) -> None:
        (Path(output_dir) / "model.safetensors").write_bytes(b"half written")
        raise RuntimeError("disk full")

    from tunelab.training.checkpoint import TrainerState

    state = TrainerState(step=2, config=cfg.model_dump(mode="json"))
    monkeypatch.setattr(accelerator, "save_state", crashing_save_state)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(accelerator, cfg.train.output_dir, state, keep=2)
    monkeypatch.undo()

    assert list_checkpoints(cfg.train.output_dir) == [good]
    restored = load_checkpoint(accelerator, good, cfg.model_dump(mode="json"))
    assert restored.step == 1


def test_checkpoints_rotate_to_save_total_limit(make_config):
    cfg = make_config(train={"max_steps": 5, "save_steps": 1, "save_total_limit": 2})
    run(cfg, evaluate_fn=lambda m: {"accuracy": 0.5})
    assert [p.name for p in list_checkpoints(cfg.train.output_dir)] == ["step-000004", "step-000005"]


def test_early_stopping_stops_after_patience(make_config):
    scores = iter([0.6, 0.7, 0.65, 0.64, 0.9, 0.9])
    best_steps: list[int] = []
    cfg = make_config(train={"eval_steps": 2, "early_stopping_patience": 2})
    result: TrainResult
    result, _, _ = run(
        cfg,
        evaluate_fn=lambda m: {"accuracy": next(scores)},
        on_best=lambda model, metrics, step: best_steps.append(step),
    )
    assert result.stopped == "early_stopping"
    assert result.step == 8  # evals at 2, 4 (best), 6, 8 -> two without improvement
    assert best_steps == [2, 4]
    assert result.best_step == 4
    assert result.best_metric == 0.7


def test_lower_is_better_for_loss_metric(make_config):
    losses = iter([0.9, 0.5, 0.7])
    cfg = make_config(train={"max_steps": 6, "eval_steps": 2, "metric_for_best_model": "loss"})
    result, _, _ = run(cfg, evaluate_fn=lambda m: {"loss": next(losses), "accuracy": 0.0})
    assert result.best_metric == 0.5
    assert result.best_step == 4
