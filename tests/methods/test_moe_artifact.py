"""MoE end to end on the tiny model: CLI train -> router report -> reload without remote code -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import peft
import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.config import validate_config
from tunelab.inference.artifact import load_artifact
from tunelab.methods.moe import Params, upcycle
from tunelab.methods.moe.layer import moe_layers
from tunelab.models.artifact import save_model
from tunelab.models.run_info import RunInfo
from tunelab.serving.predictor import load_predictor

MOE = {
    "n_routed_experts": 4,
    "top_k": 2,
    "granularity": 2,
    "router_init_std": 0.5,  # content-driven routing: uneven loads, so the bias surely moves
    "aux_loss_alpha": 0.01,
    "bias_update_speed": 0.01,
}


def _tiny_moe(tiny_backbone_dir: Path, params: Params) -> torch.nn.Module:
    model = AutoModelForSequenceClassification.from_pretrained(tiny_backbone_dir, num_labels=2)
    return upcycle(model, params).eval()


def test_moe_cli_run_reports_routing_reloads_and_predicts(tmp_path: Path, tiny_backbone_dir, toy_data):
    raw = {
        "model": {"name_or_path": str(tiny_backbone_dir)},
        "data": {"train_file": str(toy_data["train"]), "dev_file": str(toy_data["dev"])},
        "task": {"params": {"max_length": 32}},
        "methods": [{"name": "moe", "params": MOE}],
        "train": {"output_dir": str(tmp_path / "run"), "num_train_epochs": 2, "batch_size": 8, "lr": 2e-3},
    }
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    trained = runner.invoke(app, ["train", str(config), "--train.logging_steps=2"])
    assert trained.exit_code == 0, trained.output

    best = tmp_path / "run" / "best"
    router = json.loads((best / "metrics.json").read_text())["router_dev"]
    assert len(router["layers"]) == 2
    assert sum(router["layers"][0]["load"]) > 0
    assert (best / "expert_load_dev.png").stat().st_size > 0
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = {key for record in history for key in record}
    assert {"train/moe/aux_loss", "train/moe/max_mean_load", "train/moe/layer1_bias_norm"} <= logged

    art = load_artifact(best)
    assert len(moe_layers(art.model)) == 2
    assert moe_layers(art.model)[0].router.bias.abs().sum() > 0  # the trained aux-free bias was saved
    predicted = runner.invoke(app, ["predict", str(best), "--text", "a great lovely movie"])
    assert predicted.exit_code == 0, predicted.output
    cli_prediction = json.loads(predicted.output.strip().splitlines()[-1])
    assert cli_prediction["label"] in {"positive", "negative"}
    served = load_predictor(str(tmp_path / "run")).predict(
        [{"text": "a great lovely movie"}]
    )  # the server's loader
    assert served[0]["label"] == cli_prediction["label"]
    assert served[0]["probabilities"] == pytest.approx(cli_prediction["probabilities"], abs=1e-6)

    int8_dir = tmp_path / "int8"
    exported = runner.invoke(
        app,
        [
            "export",
            str(best),
            "--to",
            str(int8_dir),
            "--quantize",
            "int8",
            "--eval-data",
            str(toy_data["dev"]),
        ],
    )
    assert exported.exit_code == 0, exported.output
    int8 = load_artifact(int8_dir)
    assert len(moe_layers(int8.model)) == 2  # the int8 reader rebuilt the MoE structure
    assert torch.equal(moe_layers(int8.model)[0].router.bias, moe_layers(art.model)[0].router.bias)
    parity = json.loads(exported.output[exported.output.index("{") :])["parity"]
    assert abs(parity["metric_drop"]) <= 0.1


def test_saved_moe_reloads_with_identical_outputs(tmp_path: Path, tiny_backbone_dir):
    params = Params(**MOE)
    model = _tiny_moe(tiny_backbone_dir, params)
    moe_layers(model)[1].router.bias.copy_(torch.tensor([0.1, -0.1, 0.0, 0.2]))
    config = validate_config(
        {
            "model": {"name_or_path": str(tiny_backbone_dir)},
            "data": {"train_file": "train.csv"},
            "methods": [{"name": "moe", "params": params.model_dump()}],
        }
    )
    info = RunInfo(task="classification", labels=["negative", "positive"], config=config)
    from transformers import AutoTokenizer

    save_model(model, AutoTokenizer.from_pretrained(tiny_backbone_dir), tmp_path / "m", info)
    reloaded = load_artifact(tmp_path / "m").model
    ids = torch.randint(5, 100, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0
        )
    assert "trust_remote_code" not in json.loads((tmp_path / "m" / "config.json").read_text())


@pytest.mark.parametrize("router_trainable", [True, False])
def test_lora_on_experts_trains_only_lora_and_the_router_if_asked(tiny_backbone_dir, router_trainable):
    model = _tiny_moe(tiny_backbone_dir, Params(**MOE, router_trainable=router_trainable))
    lora = peft.LoraConfig(
        r=4,
        target_modules=r".*experts\.\d+\.(up|down)",
        modules_to_save=["router"] if router_trainable else None,
    )
    wrapped = peft.get_peft_model(model, lora).train()
    before = {n: p.detach().clone() for n, p in wrapped.named_parameters()}
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable
    assert all("lora_" in n or (router_trainable and "router" in n) for n in trainable)
    assert any("router" in n for n in trainable) == router_trainable
    optimizer = torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        ids = torch.randint(5, 100, (4, 9))
        wrapped(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {n for n, p in wrapped.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable  # frozen weights, the frozen router included, stay bit-identical
    assert any("lora_B" in n for n in changed)
    assert any("router" in n for n in changed) == router_trainable
