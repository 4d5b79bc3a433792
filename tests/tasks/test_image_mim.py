"""image_mim: masked-pixel loss falls on toy images, masks have the asked share, prediction is batch-free."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from toy_tasks import image_mim as toy_mim
from toy_tasks import toy_images, toy_run_config
from tunelab.data.images import encode_png
from tunelab.evaluation import evaluate
from tunelab.inference.predict import predict_records
from tunelab.tasks.image_mim import TASK
from tunelab.training import prepare_inputs, resolve, train


def test_reconstruction_loss_falls_on_toy_images(tiny_backbone_dir, tmp_path: Path):
    cfg = toy_run_config(
        tiny_backbone_dir,
        toy_mim(tmp_path),
        [{"name": "full"}],
        tmp_path / "run",
        max_steps=None,
        num_train_epochs=6,
        lr=3e-3,
    )
    plan = resolve(cfg)
    assert not plan.higher_is_better
    inputs = prepare_inputs(plan)
    rows = [inputs.train[i] for i in range(8)]
    first, second = inputs.collator(rows)["bool_masked_pos"], inputs.collator(rows)["bool_masked_pos"]
    assert first.shape == (8, 4)  # 8x8 images, patch 4
    assert (first.sum(dim=1) == 2).all()  # mask_ratio 0.5 of 4 patches, exactly
    assert not torch.equal(first, second)  # a new draw per batch build

    def score(model):
        return evaluate(model, TASK, inputs.dev, inputs.collator, [], 16)

    before = score(inputs.adapted.model)
    assert score(inputs.adapted.model) == before  # evaluation masks are fixed
    train(plan, inputs, Accelerator(cpu=True), evaluate=score)
    after = score(inputs.adapted.model)["reconstruction_loss"]
    assert after < 0.7 * before["reconstruction_loss"], (before, after)


def test_an_image_scores_the_same_in_any_batch(tiny_backbone_dir, tmp_path: Path):
    plan = resolve(toy_run_config(tiny_backbone_dir, toy_mim(tmp_path), [{"name": "full"}], tmp_path / "run"))
    inputs = prepare_inputs(plan)

    class Model:
        model = inputs.adapted.model.eval()
        tokenizer = inputs.tokenizer
        task = TASK
        task_params = inputs.task_params
        labels: list[str] = []

    records = [{"image": encode_png(image)} for image in toy_images(5, seed=4)[0]]
    together = [p["reconstruction_loss"] for p in predict_records(Model(), records, batch_size=5)]
    alone = [predict_records(Model(), [r], batch_size=1)[0]["reconstruction_loss"] for r in records]
    assert together == pytest.approx(alone, abs=1e-6)
    assert len(set(together)) == 5
