"""int8 export: close to fp32, smaller on disk, and the saved file reloads to the identical model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
from transformers import AutoConfig

from tunelab.errors import CheckpointError, ExportError
from tunelab.export.pipeline import export_model
from tunelab.inference.artifact import load_artifact
from tunelab.models.int8 import WEIGHTS_FILE, int8_state_dict, load_int8, quantize_int8, save_int8
from tunelab.tasks import TASKS


def test_int8_export_keeps_accuracy_shrinks_and_reloads_identically(
    tiny_run: Path, tmp_path: Path, fast, probe_batch
):
    out = tmp_path / "int8"
    record = export_model(tiny_run, out, dataclasses.replace(fast, quantize="int8"))

    report = record.parity
    assert report["before"]["metrics"]["accuracy"] > 0.7  # the fixture run learned something
    assert report["metric_drop"] <= 0.05
    assert report["after"]["size_mb"] < 0.8 * report["before"]["size_mb"]
    assert {p.name for p in out.iterdir()} == {
        "config.json",
        WEIGHTS_FILE,
        "tokenizer.json",
        "tokenizer_config.json",
        "tunelab_run.json",
        "README.md",
    }
    info = json.loads((out / "tunelab_run.json").read_text())
    assert info["export"]["steps"] == ["int8"]
    assert info["dev_metrics"]["accuracy"] == report["after"]["metrics"]["accuracy"]

    fp32 = load_artifact(tiny_run)
    reloaded = load_artifact(out)
    assert any(isinstance(m, DynamicLinear) for m in reloaded.model.modules())
    # the task head alone stays fp32
    assert {n for n, m in reloaded.model.named_modules() if type(m) is torch.nn.Linear} == {"classifier"}
    fresh = quantize_int8(load_artifact(tiny_run).model, keep=reloaded.task.head_modules)
    batch = probe_batch(reloaded)
    with torch.no_grad():
        logits = reloaded.model(**batch).logits
        torch.testing.assert_close(logits, fresh(**batch).logits, rtol=0, atol=0)
        assert 0 < (logits - fp32.model(**batch).logits).abs().max() < 0.1


@pytest.mark.parametrize("again", [{}, {"onnx": True}, {"prune": "magnitude", "quantize": "int8"}])
def test_an_int8_export_is_refused_as_a_float_source(tiny_run: Path, tmp_path: Path, fast, again):
    """Its packed int8 layers cannot be saved as float weights, exported to ONNX or pruned."""
    export_model(tiny_run, tmp_path / "int8", dataclasses.replace(fast, quantize="int8"))
    with pytest.raises(ExportError, match="already an int8 export"):
        export_model(tmp_path / "int8", tmp_path / "again", dataclasses.replace(fast, **again))
    assert not (tmp_path / "again").exists()


def test_int8_reader_refuses_incomplete_file(tiny_backbone_dir: Path, tmp_path: Path):
    task = TASKS.get("classification")
    model = quantize_int8(task.model_class.from_pretrained(tiny_backbone_dir, num_labels=2))
    save_int8(model, tmp_path)
    state = int8_state_dict(model)
    layer = next(k for k in state if k.endswith(".weight_int8")).removesuffix(".weight_int8")
    save_file({k: v for k, v in state.items() if not k.startswith(layer + ".")}, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(
        CheckpointError, match=rf"{WEIGHTS_FILE}: does not match config.json \(missing \['{layer}"
    ):
        load_int8(tmp_path, task.model_class.from_config(AutoConfig.from_pretrained(tmp_path)))
