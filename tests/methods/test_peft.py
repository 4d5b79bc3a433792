"""PEFT methods: AdaLoRA's budget shrinks, a trained LoRA run merges to equal logits, combos are refused."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from transformers import LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.config import dump_config
from tunelab.errors import ConfigError
from tunelab.inference.artifact import load_artifact
from tunelab.methods.adalora import rank_budget
from tunelab.methods.peft import backbone_linears
from tunelab.training import build_accelerator, prepare_inputs, resolve, train
from tunelab.training.tracking import read_history


def test_adalora_rank_budget_shrinks_over_training(make_config):
    methods = [{"name": "adalora", "params": {"init_r": 6, "target_r": 2, "tinit_ratio": 0.1}}]
    plan = resolve(make_config(methods=methods, train={"max_steps": 20}))
    inputs = prepare_inputs(plan)
    initial = rank_budget(inputs.adapted.model)
    train(plan, inputs, build_accelerator(plan.cfg.train))
    final = rank_budget(inputs.adapted.model)
    assert initial == 6 * 4  # query and value in 2 layers, peft's BERT default
    assert final <= 2 * 4 < initial
    budgets = [r["train/adalora_rank_budget"] for r in read_history(plan.cfg.train.output_dir)]
    assert budgets[0] == initial
    assert budgets == sorted(budgets, reverse=True)
    kept = [m.lora_E["default"].ne(0).sum() for m in inputs.adapted.model.modules() if hasattr(m, "lora_E")]
    assert int(sum(kept)) == final  # pruned singular values are zeroed in the weights, not only counted


def test_adalora_writes_its_schedule_into_peft_config_once(make_config):
    """The loop's step count reaches the method with the first step; later steps leave the config alone."""
    methods = [{"name": "adalora", "params": {"init_r": 4, "target_r": 2}}]
    plan = resolve(make_config(methods=methods, train={"max_steps": 10}))
    inputs = prepare_inputs(plan)
    config = inputs.adapted.model.peft_config["default"]
    writes = []

    class Recording(type(config)):  # the same config object, its schedule writes recorded
        def __setattr__(self, name: str, value: object) -> None:
            if name in ("total_step", "tinit", "tfinal"):
                writes.append((name, value))
            super().__setattr__(name, value)

    config.__class__ = Recording
    train(plan, inputs, build_accelerator(plan.cfg.train))
    assert writes == [("total_step", 10), ("tinit", 1), ("tfinal", 2)]


def test_trained_lora_run_saves_an_adapter_that_merges_to_equal_logits(make_config, tmp_path: Path):
    cfg = make_config(methods=[{"name": "lora", "params": {"r": 4, "use_dora": True}}])
    config = tmp_path / "cfg.yaml"
    config.write_text(dump_config(cfg))
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output
    best = cfg.train.output_dir / "best"
    assert (best / "adapter_config.json").is_file()
    assert not (best / "config.json").exists()
    saved = json.loads((best / "adapter_config.json").read_text())
    assert set(saved["modules_to_save"]) >= {"classifier", "pooler"}

    result = runner.invoke(
        app, ["export", str(cfg.train.output_dir), "--to", str(tmp_path / "merged"), "--merge"]
    )
    assert result.exit_code == 0, result.output
    adapter, merged = load_artifact(best), load_artifact(tmp_path / "merged")
    assert isinstance(adapter.model, PeftModel)
    assert not isinstance(merged.model, PeftModel)
    batch = adapter.tokenizer(["the movie was good", "an awful plot"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(
            merged.model(**batch).logits, adapter.model(**batch).logits, rtol=0, atol=1e-5
        )


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        ([{"name": "lora"}, {"name": "ia3"}], r"lora and ia3 each decide the trainable parameters; keep one"),
        (
            [{"name": "moe"}, {"name": "lora"}],
            r"methods\[1\]\.name: lora cannot train .*moe adds weights the base does not have; train moe",
        ),
        ([{"name": "adalora", "params": {"tinit_ratio": 0.5, "tfinal_ratio": 0.5}}], r"budget phase"),
    ],
    ids=["two-peft", "moe-lora", "adalora-schedule"],
)
def test_invalid_combinations_are_refused_with_the_reason(make_config, methods, message):
    with pytest.raises(ConfigError, match=message):
        resolve(make_config(methods=methods))


ENCODER_LINEARS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


def test_lora_default_adapts_every_encoder_linear_and_trains_the_head_in_full(make_config):
    plan = resolve(make_config(methods=[{"name": "lora"}]))
    model = prepare_inputs(plan).adapted.model
    wrapped = {name for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    prefix = "base_model.model.bert.encoder.layer"
    assert wrapped == {f"{prefix}.{i}.{linear}" for i in range(2) for linear in ENCODER_LINEARS}
    trained_in_full = {
        name.split(".modules_to_save.")[0]
        for name, p in model.named_parameters()
        if p.requires_grad and "lora_" not in name
    }
    assert trained_in_full == {"base_model.model.classifier", "base_model.model.bert.pooler"}


def test_backbone_linears_of_a_decoder_leave_out_the_lm_head():
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    names = backbone_linears(LlamaForCausalLM(config), trained_in_full=())
    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert sorted(name.rsplit(".", 1)[-1] for name in names) == sorted(projections)


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_a_full_fine_tuning_rate_is_warned_for_lora_and_ia3(make_config, method):
    with pytest.warns(UserWarning, match=rf"train\.lr 0\.0001 is a full fine-tuning rate; {method}"):
        resolve(make_config(methods=[{"name": method}], train={"lr": 1e-4}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve(make_config(methods=[{"name": method}], train={"lr": 2e-3}))
