"""ONNX export: onnxruntime matches eager PyTorch at new batch sizes and lengths; the dir stays loadable."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from tunelab.errors import ExportError
from tunelab.export import onnx as onnx_export
from tunelab.export.pipeline import export_model
from tunelab.inference.artifact import load_artifact


def test_onnx_export_matches_eager_on_dynamic_shapes(
    tiny_run: Path, tmp_path: Path, fast, probe_batch, monkeypatch
):
    with monkeypatch.context() as patch:
        patch.setattr(onnx_export, "ONNX_ATOL", -1.0)
        with pytest.raises(ExportError, match="onnxruntime logits differ"):
            export_model(tiny_run, tmp_path / "onnx", dataclasses.replace(fast, onnx=True))
    assert not [p for p in tmp_path.iterdir() if "onnx" in p.name]  # refused: no dir, no temp dir left

    out = tmp_path / "onnx"
    record = export_model(tiny_run, out, dataclasses.replace(fast, onnx=True))

    assert record.steps == ["onnx"]
    assert record.onnx["max_logit_diff"] <= onnx_export.ONNX_ATOL
    assert {"model.onnx", "model.safetensors", "config.json", "tokenizer.json", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    art = load_artifact(out)  # eval/predict/serve keep working on the torch weights beside the graph
    session = onnx_export.OrtClassifier(onnx_export.ort_session(out / "model.onnx", threads=1))
    batch = probe_batch(art)  # 4 rows, a length the export never saw
    with torch.no_grad():
        torch.testing.assert_close(session(**batch).logits, art.model(**batch).logits, rtol=0, atol=1e-4)
    info = json.loads((out / "tunelab_run.json").read_text())
    assert info["export"]["parity"]["after"]["metrics"]["accuracy"] == pytest.approx(
        info["export"]["parity"]["before"]["metrics"]["accuracy"]
    )
