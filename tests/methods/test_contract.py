"""The method contract matrix: every registered task x every registered method, on tiny data.

A compatible pair takes one optimizer step through the real loop with a finite loss, changes only
parameters it trains (frozen ones bit-identical, the task head changed), and round-trips save -> load
with identical outputs. A pair a method refuses (``MethodSpec.refuses``/groups) is listed with its
reason, and plan validation must refuse it with that reason. New tasks (``TOY_TASKS``) and methods
(``METHODS``, ``TOY_METHODS``) join automatically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from toy_tasks import (
    CONTINUAL_METHODS,
    TOY_TASKS,
    continual_classification,
    save_previous_run,
    toy_methods,
    toy_run_config,
)
from tunelab.errors import ConfigError
from tunelab.inference.artifact import load_artifact
from tunelab.methods import METHODS
from tunelab.methods.freeze import in_head
from tunelab.models.artifact import save_model
from tunelab.tasks import TASKS
from tunelab.training import build_accelerator, prepare_inputs, resolve, train
from tunelab.training.plan import method_target
from tunelab.workflows import run_info

PAIRS = [(task, method) for task in TASKS.names() for method in METHODS.names()]


def declared_refusal(task_name: str, method_name: str) -> str | None:
    """The reason ``method`` gives for not serving ``task``, from its spec (None when compatible)."""
    task, spec = TASKS.get(task_name), METHODS.get(method_name)
    if spec.refuses is None:
        return None
    methods = toy_methods(method_name)
    params = spec.params.model_validate(methods[0].get("params") or {})
    target = method_target(task, [METHODS.get(m["name"]) for m in methods])
    return spec.refuses(params, target)


REFUSED = {pair: reason for pair in PAIRS if (reason := declared_refusal(*pair))}
COMPATIBLE = [pair for pair in PAIRS if pair not in REFUSED]


def with_teacher(methods: list[dict[str, Any]], teacher: Path) -> list[dict[str, Any]]:
    """``methods`` with the TEACHER placeholder of a distillation entry replaced by ``teacher``."""
    return [
        {**m, "params": {**m["params"], "teacher": str(teacher)}} if m.get("params", {}).get("teacher") else m
        for m in methods
    ]


def save_teacher(tiny_backbone_dir: Path, tmp_path: Path, task: str) -> Path:
    """An untrained model of ``task`` with the toy data's labels, saved as a run's model (a valid teacher)."""
    (tmp_path / "teacher-run").mkdir()
    plan = resolve(toy_config(tiny_backbone_dir, tmp_path / "teacher-run", task, "full"))
    inputs = prepare_inputs(plan)
    save_model(inputs.adapted.model, inputs.tokenizer, tmp_path / "teacher", run_info(plan, inputs))
    return tmp_path / "teacher"


def with_unlabeled(methods: list[dict[str, Any]], train_file: str) -> list[dict[str, Any]]:
    """``methods`` with the UNLABELED placeholder of a self-training entry replaced by ``train_file``."""
    return [
        {**m, "params": {**m["params"], "unlabeled_file": train_file}}
        if m.get("params", {}).get("unlabeled_file")
        else m
        for m in methods
    ]


def toy_config(
    tiny_backbone_dir: Path,
    tmp_path: Path,
    task: str,
    method: str,
    teacher: Path | None = None,
    previous: Path | None = None,
    **train: Any,
) -> Any:
    """The toy run of ``task`` under ``method``; a ``previous`` run is continued on new labels."""
    methods = toy_methods(method) if teacher is None else with_teacher(toy_methods(method), teacher)
    sections = TOY_TASKS[task](tmp_path) if previous is None else continual_classification(tmp_path)
    methods = with_unlabeled(methods, sections["data"]["train_file"])
    return toy_run_config(tiny_backbone_dir, sections, methods, tmp_path / "run", previous, **train)


def test_declared_incompatibilities():
    """The pairs refused today, each with a reason (the README's methods table lists the same)."""
    known = {pair for pair in REFUSED if pair[0] == "classification"}
    assert known == {("classification", "prefix_tuning")}
    assert "past_key_values" in REFUSED["classification", "prefix_tuning"]


@pytest.mark.parametrize(("task", "method"), sorted(REFUSED), ids=[f"{t}-{m}" for t, m in sorted(REFUSED)])
def test_validation_refuses_declared_pairs_with_the_reason(tiny_backbone_dir, tmp_path, task, method):
    with pytest.raises(ConfigError, match=r"methods\[0\]\.name: .*cannot train task") as err:
        resolve(toy_config(tiny_backbone_dir, tmp_path, task, method))
    assert REFUSED[task, method] in str(err.value)


@pytest.mark.parametrize(("task", "method"), COMPATIBLE, ids=[f"{t}-{m}" for t, m in COMPATIBLE])
def test_one_step_trains_what_it_should_and_round_trips(tiny_backbone_dir, tmp_path, task, method):
    teacher = save_teacher(tiny_backbone_dir, tmp_path, task) if method == "distill" else None
    previous = save_previous_run(tiny_backbone_dir, tmp_path) if method in CONTINUAL_METHODS else None
    plan = resolve(toy_config(tiny_backbone_dir, tmp_path, task, method, teacher, previous))
    accelerator = build_accelerator(plan.cfg.train)
    inputs = prepare_inputs(plan)
    model = inputs.adapted.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trained = {name for name, p in model.named_parameters() if p.requires_grad}

    result = train(plan, inputs, accelerator)

    assert result.step == 1
    assert math.isfinite(result.losses[1])
    after = dict(model.named_parameters())
    changed = {name for name in before if not torch.equal(before[name], after[name].detach())}
    assert changed <= trained, f"frozen parameters changed: {sorted(changed - trained)[:5]}"
    if plan.task.head_modules:
        assert any(in_head(name, plan.task.head_modules) for name in changed), "the task head did not train"
    else:
        assert changed, "nothing trained"

    save_model(model, inputs.tokenizer, tmp_path / "best", run_info(plan, inputs))
    loaded = load_artifact(tmp_path / "best")
    batch = inputs.collator([inputs.dev[i] for i in range(4)])
    forward = {key: value for key, value in batch.items() if key not in plan.task.target_keys}
    model.eval()
    with torch.no_grad():  # as evaluation does: targets stay out of the forward, outputs may use them
        expected = plan.task.outputs(model(**forward), batch)
        got = plan.task.outputs(loaded.model(**forward), batch)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6)
