"""Continual runs (model.previous_run): the grown head keeps the previous logits, the report measures
forgetting on the previous task's own splits, validation refuses what cannot continue, and a resumed
continual run continues exactly under each continual method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from toy_tasks import (
    classification,
    continual_classification,
    continual_run_config,
    save_previous_run,
    toy_rows,
    toy_run_config,
    write_csv,
)
from tunelab.config import ConfigError, validate_config
from tunelab.errors import DataError
from tunelab.inference.artifact import load_artifact
from tunelab.inference.predict import predict_outputs
from tunelab.models.artifact import save_model
from tunelab.training import build_accelerator, prepare_inputs, resolve, train
from tunelab.workflows import run_info, train_run

B_LABELS = ["negative", "positive", "downbeat", "upbeat"]  # the previous run's labels first


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def test_grown_head_gives_the_previous_logits_on_its_columns(tiny_backbone_dir, tmp_path):
    plan = resolve(continual_run_config(tiny_backbone_dir, tmp_path, [{"name": "full"}]))
    inputs = prepare_inputs(plan)
    saved = load_artifact(tmp_path / "previous-run" / "best").model
    batch = inputs.collator([inputs.dev[i] for i in range(6)])

    grown, before = _logits(inputs.adapted.model, batch), _logits(saved, batch)

    assert inputs.labels == B_LABELS
    assert inputs.adapted.model.config.id2label == dict(enumerate(B_LABELS))
    assert grown.shape == (6, 4)
    # Equal up to float rounding: a 4-column matmul may sum in another order than a 2-column one.
    torch.testing.assert_close(grown[:, :2], before, rtol=0, atol=1e-6)
    assert not torch.equal(grown[:, 2:], grown[:, :2])  # the new rows are initialised, not copies


def _write(path: Path, cfg) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    return path


def test_continual_run_reports_the_previous_task_before_and_after(tiny_backbone_dir, tmp_path):
    a_sections = classification(tmp_path)
    a_sections["data"]["test_file"] = a_sections["data"]["dev_file"]
    a_cfg = toy_run_config(tiny_backbone_dir, a_sections, [{"name": "full"}], tmp_path / "a", max_steps=2)
    train_run(_write(tmp_path / "a.yaml", a_cfg))
    b_cfg = toy_run_config(
        tiny_backbone_dir,
        continual_classification(tmp_path),
        [{"name": "full"}],
        tmp_path / "b",
        tmp_path / "a",
    )
    train_run(_write(tmp_path / "b.yaml", b_cfg))

    before = json.loads((tmp_path / "a" / "best" / "metrics.json").read_text())
    after = json.loads((tmp_path / "b" / "best" / "metrics.json").read_text())
    b_best = load_artifact(tmp_path / "b" / "best")
    assert b_best.labels == B_LABELS
    section = after["previous_test"]
    assert section["accuracy_before"] == before["test"]["accuracy"]
    assert section["forgetting"] == pytest.approx(before["test"]["accuracy"] - section["accuracy"])
    # Task-aware accuracy is the argmax over A's two columns, recomputed here from raw logits.
    inputs = prepare_inputs(resolve(b_cfg))
    previous = inputs.adapted.previous
    assert previous is not None
    logits = predict_outputs(b_best.model, b_best.task, previous.test, previous.collator, 16).arrays["logits"]
    gold = np.asarray(previous.test["labels"])
    assert set(gold.tolist()) <= {0, 1}
    assert section["accuracy"] == pytest.approx(float((logits[:, :2].argmax(-1) == gold).mean()))
    assert section["accuracy_all_labels"] == pytest.approx(float((logits.argmax(-1) == gold).mean()))
    assert section["accuracy_all_labels"] <= section["accuracy"]  # B's columns can only take A's rows


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"methods": [{"name": "rehearsal"}]},
            r"methods\[0\]\.name: rehearsal replays .*model\.previous_run",
        ),
        ({"methods": [{"name": "ewc"}]}, r"methods\[0\]\.name: ewc anchors .*model\.previous_run"),
        ({"model": {"previous_run": "PREVIOUS"}, "methods": [{"name": "lora"}]}, r"lora saves an adapter"),
        ({"model": {"previous_run": "MISSING"}}, r"model\.previous_run: .*run directory not found"),
        (
            {"model": {"previous_run": "PREVIOUS"}, "task": {"params": {"labels": ["upbeat", "downbeat"]}}},
            r"task\.params\.labels: a continual run's labels start with .*\['negative', 'positive'\]",
        ),
    ],
    ids=["rehearsal-alone", "ewc-alone", "lora", "missing-run", "label-order"],
)
def test_validation_refuses_what_cannot_continue(tiny_backbone_dir, tmp_path, change, message):
    previous = save_previous_run(tiny_backbone_dir, tmp_path)
    raw = toy_run_config(tiny_backbone_dir, classification(tmp_path), [{"name": "full"}], tmp_path / "run")
    raw = raw.model_dump(mode="json")
    for section, value in change.items():
        value = json.loads(
            json.dumps(value).replace("PREVIOUS", str(previous)).replace("MISSING", str(tmp_path / "nope"))
        )
        if section == "model":
            raw["model"] = value
        elif section == "task":
            raw["task"]["params"].update(value["params"])
        else:
            raw[section] = value
    with pytest.raises(ConfigError, match=message):
        resolve(validate_config(raw))


@pytest.mark.parametrize("side", ["this", "previous"])
def test_validation_refuses_multi_label_on_either_side(tiny_backbone_dir, tmp_path, side):
    """A multi-hot row has no label column of the grown head: refused before any weight loads."""
    a, b = classification(tmp_path), continual_classification(tmp_path)
    (b if side == "this" else a)["task"]["params"]["multi_label"] = True
    previous = tmp_path / "previous-run"
    plan = resolve(toy_run_config(tiny_backbone_dir, a, [{"name": "full"}], previous))
    inputs = prepare_inputs(plan)
    save_model(inputs.adapted.model, inputs.tokenizer, previous / "best", run_info(plan, inputs))
    message = (
        "task.params.multi_label" if side == "this" else "previous-run trained with task.params.multi_label"
    )
    with pytest.raises(ConfigError, match=f"{message}: continual runs grow a head with one label per row"):
        resolve(toy_run_config(tiny_backbone_dir, b, [{"name": "ewc"}], tmp_path / "run", previous))


def test_class_weights_auto_reads_only_this_runs_labels(tiny_backbone_dir, tmp_path):
    """The previous labels have no row in B's train: that is no skew, so mildly uneven B stays unweighted."""
    sections = continual_classification(tmp_path)
    rows = [row for i, row in enumerate(toy_rows(48, seed=4)) if row[1] == "positive" or i % 2]
    names = {"positive": "upbeat", "negative": "downbeat"}
    write_csv(Path(sections["data"]["train_file"]), [(text, names[label]) for text, label in rows])
    counts = [sum(label == name for _, label in rows) for name in names]
    assert 1.5 < max(counts) / min(counts) < 3  # uneven, but not skewed (IMBALANCE_RATIO)
    previous = save_previous_run(tiny_backbone_dir, tmp_path)
    plan = resolve(
        toy_run_config(tiny_backbone_dir, sections, [{"name": "full"}], tmp_path / "run", previous)
    )

    params = prepare_inputs(plan).task_params

    assert params.class_weights == "none"
    assert params.labels == B_LABELS


def test_continual_run_refuses_a_previous_data_file_changed_since_that_run(tiny_backbone_dir, tmp_path):
    previous = save_previous_run(tiny_backbone_dir, tmp_path)
    a_dev = tmp_path / "cls_dev.csv"
    write_csv(a_dev, toy_rows(16, seed=9))
    b = continual_classification(tmp_path)
    plan = resolve(toy_run_config(tiny_backbone_dir, b, [{"name": "full"}], tmp_path / "b", previous))
    with pytest.raises(DataError, match=f"{a_dev.resolve()}: data.dev_file changed since the run"):
        prepare_inputs(plan)


def test_model_takes_one_start():
    with pytest.raises(ConfigError, match="exactly one of name_or_path"):
        validate_config(
            {"model": {"name_or_path": "x", "previous_run": "runs/a"}, "data": {"train_file": "t"}}
        )


@pytest.mark.parametrize(
    "methods",
    [[{"name": "full"}], [{"name": "rehearsal", "params": {"buffer_size": 20}}], [{"name": "ewc"}]],
    ids=["full", "rehearsal", "ewc"],
)
def test_resumed_continual_run_gives_the_identical_next_losses(tiny_backbone_dir, tmp_path, methods):
    cfg = continual_run_config(
        tiny_backbone_dir, tmp_path, methods, max_steps=4, save_steps=2, lr=1e-3, logging_steps=1
    )
    plan = resolve(cfg)
    full = train(plan, prepare_inputs(plan), build_accelerator(cfg.train))
    checkpoint = cfg.train.output_dir / "checkpoints" / "step-000002"
    method = methods[0]["name"]
    assert (checkpoint / f"run_state-{method}.safetensors").is_file() == (method != "full")
    resumed = train(plan, prepare_inputs(plan), build_accelerator(cfg.train), resume_from=checkpoint)
    assert sorted(resumed.losses) == [3, 4]
    for step in (3, 4):
        assert resumed.losses[step] == pytest.approx(full.losses[step], abs=1e-6)
