"""Memory estimate: its terms equal the built model's tensors, and it tracks what training really holds."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import BertConfig
from typer.testing import CliRunner

from toy_tasks import save_tiny_bert, toy_rows, write_csv
from tunelab.cli import app
from tunelab.config import RunConfig, dump_config
from tunelab.training.memory import Estimate, Shape, activation_bytes, estimate_plan
from tunelab.training.plan import Plan, resolve
from tunelab.training.setup import apply_methods, load_model
from tunelab.workflows import estimate_memory, run_labels

ROOT = Path(__file__).resolve().parents[2]
LORA = {"name": "lora", "params": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1}}
MOE = {"name": "moe", "params": {"n_routed_experts": 4, "top_k": 2}}
METHODS = {"full": {"name": "full"}, "lora": LORA, "moe": MOE}


def _plan(make_config: Callable[..., RunConfig], method: str = "full", **train: Any) -> Plan:
    return resolve(make_config(methods=[METHODS[method]], train=train))


def _built(plan: Plan) -> torch.nn.Module:
    """The model exactly as ``train`` builds it (real weights), for comparing with the meta estimate."""
    labels = run_labels(plan)
    return apply_methods(plan, load_model(plan, labels, plan.task_params), plan.task_params).model


def _saved_activation_bytes(model: torch.nn.Module, batch: int, length: int, autocast: bool) -> int:
    """Bytes autograd saves for backward in one training forward (distinct storages, weights excluded)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    model.train()
    ids = torch.randint(5, 100, (batch, length))
    low = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), low:
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.zeros(batch, dtype=torch.long))
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in weights)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_parameter_and_gradient_terms_equal_the_built_model(make_config, method):
    plan = _plan(make_config, method)
    model = _built(plan)
    estimate = estimate_plan(plan, run_labels(plan))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert estimate.get("parameters") == sum(p.numel() * p.element_size() for p in model.parameters())
    assert estimate.get("gradients") == sum(p.numel() * p.element_size() for p in trainable)
    assert estimate.get("AdamW moments") == 2 * estimate.get("gradients")


def test_lora_trains_what_peft_reports_trainable(make_config):
    plan = _plan(make_config, "lora")
    model = _built(plan)
    assert isinstance(model, PeftModel)
    trainable, _ = model.get_nb_trainable_parameters()
    assert estimate_plan(plan, run_labels(plan)).get("gradients") == 4 * trainable


def test_lora_optimizer_terms_are_a_small_fraction_of_full_on_minilm():
    """MiniLM on meta (no weights load): the LoRA example trains ~2 % of what full fine-tuning trains."""
    from tunelab.config import load_config

    labels = ["negative", "positive"]
    full, lora = (
        estimate_plan(resolve(load_config(ROOT / "examples" / f"{name}.yaml"), count_labels=False), labels)
        for name in ("sentiment", "sentiment_lora")
    )
    for term in ("gradients", "AdamW moments"):
        assert lora.get(term) < 0.03 * full.get(term)
    assert lora.get("parameters") > full.get("parameters")  # the frozen base stays, adapters are added


@pytest.mark.parametrize(("method", "autocast"), [(m, False) for m in sorted(METHODS)] + [("lora", True)])
def test_activation_estimate_matches_what_autograd_saves(make_config, method, autocast):
    """Within 10 % of the bytes autograd really saves, frozen LoRA bases and routed MoE experts included."""
    plan = _plan(make_config, method, precision="bf16" if autocast else "fp32")
    model = _built(plan)
    batch, length = 8, 32
    saved = _saved_activation_bytes(model, batch, length, autocast)
    estimate = estimate_plan(plan, run_labels(plan), micro_batch=(batch, length))
    predicted = estimate.get("activations") + estimate.get("autocast copies")
    assert predicted == pytest.approx(saved, rel=0.10)


def test_gradient_checkpointing_lowers_only_the_activations(make_config):
    plain, checkpointed = (
        estimate_plan(plan, run_labels(plan))
        for plan in (_plan(make_config), _plan(make_config, gradient_checkpointing=True))
    )
    assert checkpointed.get("activations") < plain.get("activations")
    assert checkpointed.total - checkpointed.get("activations") == plain.total - plain.get("activations")


def test_blocks_before_the_first_trainable_parameter_save_nothing(make_config):
    """Training the head alone needs no activation below it: only the head's input is kept."""
    plan = _plan(make_config)
    model = _built(plan)
    shape = Shape(batch=8, seq_len=32)
    everything = activation_bytes(model, model.config, shape)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("classifier"))
    assert activation_bytes(model, model.config, shape) == 8 * 32 * model.config.hidden_size * 4
    assert everything > 10 * 8 * 32 * model.config.hidden_size * 4


def _sharded(plan: Plan, world_size: int, shard: str) -> Estimate:
    return estimate_plan(plan, run_labels(plan), world_size, shard)  # type: ignore[arg-type]


def test_sharding_divides_the_sharded_terms_by_the_world_size(make_config):
    plan = _plan(make_config)
    one = _sharded(plan, 1, "none")
    ddp, zero2, zero3 = (_sharded(plan, 2, shard) for shard in ("none", "grad_optimizer", "full"))
    halves = {term: -(-one.get(term) // 2) for term in ("parameters", "gradients", "AdamW moments")}
    assert ddp.get("DDP buckets") == one.get("gradients")  # unsharded: every device holds a full copy
    assert [ddp.get(t) for t in halves] == [one.get(t) for t in halves]
    assert zero2.get("parameters") == one.get("parameters")
    assert [zero2.get(t) for t in ("gradients", "AdamW moments")] == [
        halves["gradients"],
        2 * halves["gradients"],
    ]
    assert zero3.get("parameters") == halves["parameters"]
    assert 0 < zero3.get("gathered block") < one.get("parameters")
    assert zero3.get("activations") == one.get("activations")  # each device still runs its micro-batch


@pytest.fixture
def config_file(make_config: Callable[..., RunConfig], tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(make_config()), encoding="utf-8")
    return path


def test_cli_prints_each_term_with_overrides_and_sharding(config_file):
    args = ["estimate", str(config_file), "--world-size", "4", "--shard", "full", "--train.batch_size", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for term in ("parameters", "gradients", "AdamW moments", "gathered block", "activations", "total"):
        assert term in result.output
    assert "micro-batch 2 x 32 tokens" in result.output
    assert "world size 4, shard full" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "zero"], "--shard: 'zero' is not one of"),
        (["--world-size", "2", "--measure"], "one process"),
    ],
)
def test_cli_refuses_unknown_shards_and_measuring_several_processes(config_file, args, message):
    result = CliRunner().invoke(app, ["estimate", str(config_file), *args])
    assert result.exit_code == 2
    assert message in result.output


@pytest.fixture
def wide_backbone_dir(tiny_backbone_dir: Path, tmp_path: Path) -> Path:
    """The tiny tokenizer with a wider random BERT (hidden 256, 4 layers): activations of ~100 MiB."""
    out = tmp_path / "wide-bert"
    out.mkdir()
    for file in tiny_backbone_dir.iterdir():
        if "token" in file.name or file.name == "vocab.txt":
            (out / file.name).write_bytes(file.read_bytes())
    vocab_size = BertConfig.from_pretrained(tiny_backbone_dir).vocab_size
    return save_tiny_bert(out, vocab_size, hidden=256, layers=4, heads=4, intermediate=1024)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_estimate_is_within_the_stated_factor_of_the_measured_peak(
    make_config, wide_backbone_dir, tmp_path, method
):
    """Measured step growth over the estimate stays in [0.9, 1.5] (README, "Memory estimate").

    Measured here 1.11 (full) and 1.14 (LoRA), MiniLM 1.04 and 1.16: above 1 by backward's transient
    buffers, which the estimate leaves out. Below 0.9 a counted term would not be there; above 1.5 a
    real one would be missing from the estimate.
    """
    long_rows = [(f"{text} " + " ".join(["plot"] * 40), label) for text, label in toy_rows(256, seed=5)]
    config = make_config(
        model={"name_or_path": str(wide_backbone_dir)},
        data={"train_file": str(write_csv(tmp_path / "long.csv", long_rows))},
        methods=[METHODS[method]],
        train={"batch_size": 64, "precision": "fp32"},
    )
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(config), encoding="utf-8")
    estimate, measured = estimate_memory(path, measure=True)
    assert measured is not None
    assert (measured.batch, measured.seq_len) == (64, 32)
    ratio = measured.growth / (estimate.total - estimate.get("parameters"))
    assert 0.9 <= ratio <= 1.5, ratio
