"""LoRA adapter artifacts: save/load round trip, verified merge (merged == adapter != base), refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tunelab.data import Columns
from tunelab.errors import CheckpointError, ExportError
from tunelab.export import merge
from tunelab.export.pipeline import export_model
from tunelab.inference.artifact import load_artifact
from tunelab.models.artifact import save_model
from tunelab.models.load import label_maps
from tunelab.models.run_info import RunInfo


@pytest.fixture
def lora_model(make_config, tiny_backbone_dir: Path) -> tuple[PeftModel, Any, RunInfo]:
    """A LoRA model with non-zero LoRA weights (init_lora_weights=False), its tokenizer and run info."""
    labels = ["negative", "positive"]
    id2label, label2id = label_maps(labels)
    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_backbone_dir, num_labels=len(labels), id2label=id2label, label2id=label2id
    )
    torch.nn.init.normal_(base.classifier.weight, std=1.0)  # logits of order 1, so differences show
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["query", "value", "intermediate.dense"],
        modules_to_save=["classifier", "pooler"],  # the MLM backbone has no pooler
        init_lora_weights=False,
    )
    info = RunInfo(
        task="classification",
        task_params={"max_length": 32},
        labels=labels,
        columns=Columns(text="text", label="label"),
        config=make_config(),
    )
    return get_peft_model(base, config), AutoTokenizer.from_pretrained(tiny_backbone_dir), info


@pytest.fixture
def adapter_dir(lora_model, tiny_backbone_dir: Path, tmp_path: Path) -> Path:
    model, tokenizer, info = lora_model
    save_model(model, tokenizer, tmp_path / "adapter", info)
    return tmp_path / "adapter"


@pytest.mark.parametrize(("dtype", "atol"), [("float32", 1e-5), ("float16", 2e-2)])
def test_merge_outputs_equal_adapter_and_differ_from_base(
    adapter_dir: Path, tmp_path: Path, fast, probe_batch, dtype, atol
):
    adapter = load_artifact(adapter_dir)
    assert isinstance(adapter.model, PeftModel)
    batch = probe_batch(adapter)
    with torch.no_grad():
        adapter_logits = adapter.model(**batch).logits
        with adapter.model.disable_adapter():
            base_logits = adapter.model(**batch).logits

    out = tmp_path / "merged"
    record = export_model(adapter_dir, out, dataclasses.replace(fast, merge=True, dtype=dtype))

    assert record.steps == ["merged"]
    assert record.merged["max_logit_diff"] <= merge.MERGE_ATOL[dtype]
    assert not (out / "adapter_config.json").exists()
    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        assert weights.get_tensor(next(iter(weights.keys()))).dtype == merge.DTYPES[dtype]
    merged = load_artifact(out)
    assert not isinstance(merged.model, PeftModel)
    assert merged.info.adapter is None
    with torch.no_grad():
        merged_logits = merged.model(**batch).logits
    torch.testing.assert_close(merged_logits, adapter_logits, rtol=0, atol=atol)
    assert (merged_logits - base_logits).abs().max() > 0.1


def test_adapter_export_without_merge_is_refused(adapter_dir: Path, tmp_path: Path, fast):
    with pytest.raises(ExportError, match="with --merge"):
        export_model(adapter_dir, tmp_path / "out", fast)


def test_failed_merge_check_writes_nothing(adapter_dir: Path, tmp_path: Path, fast, monkeypatch):
    monkeypatch.setitem(merge.MERGE_ATOL, "float32", -1.0)
    with pytest.raises(ExportError, match="differs from the adapter model"):
        export_model(adapter_dir, tmp_path / "out", dataclasses.replace(fast, merge=True))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))]


def test_adapter_info_names_its_base(adapter_dir: Path, tiny_backbone_dir: Path):
    info = json.loads((adapter_dir / "tunelab_run.json").read_text())
    assert info["adapter"] == {"base_model": str(tiny_backbone_dir)}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter_dir.iterdir()}


def test_adapter_without_the_bases_missing_modules_is_refused(
    lora_model, tiny_backbone_dir: Path, tmp_path: Path
):
    model, tokenizer, info = lora_model
    model.peft_config["default"].modules_to_save = {"classifier"}
    save_model(model, tokenizer, tmp_path / "a", info)
    with pytest.raises(CheckpointError, match=r"no weights for \['bert\.pooler.*modules_to_save"):
        load_artifact(tmp_path / "a")
