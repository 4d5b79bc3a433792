"""Exports write what reloads exactly: tied tensors, fp32 heads, every output compared, a reload check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
from transformers import (
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    BertForMaskedLM,
    BertForSequenceClassification,
)

from tunelab.errors import ExportError
from tunelab.export import merge, prune
from tunelab.export.pipeline import check_reload
from tunelab.models.artifact import save_model
from tunelab.models.int8 import load_int8, quantize_int8, save_int8
from tunelab.models.run_info import RunInfo

TEXTS = ["the movie was good", "an awful plot", "quite fine"]


@pytest.fixture
def batch(tiny_backbone_dir: Path) -> dict[str, torch.Tensor]:
    return dict(AutoTokenizer.from_pretrained(tiny_backbone_dir)(TEXTS, padding=True, return_tensors="pt"))


def test_int8_round_trips_tied_tensors(tiny_backbone_dir: Path, tmp_path: Path, batch):
    """An MLM head shares the embeddings and its bias: safetensors refuses shared storage unless copied."""
    model = quantize_int8(BertForMaskedLM.from_pretrained(tiny_backbone_dir))
    save_int8(model, tmp_path)
    reloaded = load_int8(tmp_path, BertForMaskedLM.from_pretrained(tiny_backbone_dir))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_int8_keeps_the_named_head_fp32_and_reloads_it(tiny_backbone_dir: Path, tmp_path: Path, batch):
    model = quantize_int8(
        BertForSequenceClassification.from_pretrained(tiny_backbone_dir, num_labels=2), keep=("classifier",)
    )
    fp32 = {name for name, m in model.named_modules() if type(m) is torch.nn.Linear}
    assert fp32 == {"classifier"}
    assert any(isinstance(m, DynamicLinear) for m in model.modules())
    save_int8(model, tmp_path)
    skeleton = BertForSequenceClassification.from_pretrained(tiny_backbone_dir, num_labels=2)
    reloaded = load_int8(tmp_path, skeleton)
    assert {name for name, m in reloaded.named_modules() if type(m) is torch.nn.Linear} == fp32
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_magnitude_pruning_leaves_tied_weights_so_the_save_reloads_exactly(
    tiny_backbone_dir: Path, tmp_path: Path, batch
):
    model = BertForMaskedLM.from_pretrained(tiny_backbone_dir).eval()
    names = [name for name, _ in prune.prunable_linears(model, ())]
    assert "cls.predictions.decoder" not in names  # tied to the word embeddings
    assert "cls.predictions.transform.dense" in names
    prune.magnitude_prune(model, 0.5, ())
    prune.make_permanent(model)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    model.save_pretrained(tmp_path)
    reloaded = BertForMaskedLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_merge_compares_every_output_of_a_qa_head(tiny_backbone_dir: Path, batch):
    """A QA model answers with start and end logits (no ``logits``); the merge check covers both."""
    torch.manual_seed(0)
    base = AutoModelForQuestionAnswering.from_pretrained(tiny_backbone_dir)
    config = LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False)
    model = get_peft_model(base, config)
    with torch.no_grad():
        want = model(**batch)
    merged, diff = merge.merge_verified(model, batch, "float32")
    assert diff <= merge.MERGE_ATOL["float32"]
    with torch.no_grad():
        got = merged(**batch)
    for name in ("start_logits", "end_logits"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=1e-5)


def test_check_reload_refuses_a_model_that_reloads_differently(
    tiny_backbone_dir: Path, tmp_path: Path, batch
):
    model = BertForSequenceClassification.from_pretrained(tiny_backbone_dir, num_labels=2).eval()
    info = RunInfo(task="classification", task_params={"max_length": 32}, labels=["negative", "positive"])
    save_model(model, AutoTokenizer.from_pretrained(tiny_backbone_dir), tmp_path / "model", info)
    check_reload(model, tmp_path / "model", batch)  # what was written is what reloads
    with torch.no_grad():
        model.classifier.bias += 1.0  # as if the writer had dropped or re-initialised a tensor
    with pytest.raises(ExportError, match="reloads with outputs 1 away"):
        check_reload(model, tmp_path / "model", batch)
