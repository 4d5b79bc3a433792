"""Rehearsal: replayed rows are the previous task's, with its labels, in the configured share of each
batch, drawn the same way for the same seed; the loss is the mean over new and replayed rows."""

from __future__ import annotations

import pytest
import torch

from toy_tasks import continual_run_config, image_classification, toy_run_config
from tunelab.methods import rehearsal
from tunelab.models.artifact import save_model
from tunelab.training import prepare_inputs, resolve
from tunelab.workflows import run_info


@pytest.mark.parametrize(
    ("rows", "ratio", "replayed"), [(8, 0.5, 8), (6, 0.25, 2), (16, 0.2, 4), (8, 0.0, 0)]
)
def test_replayed_share_of_the_mixed_batch(rows, ratio, replayed):
    k = rehearsal.replay_count(rows, ratio)
    assert k == replayed
    assert k / (rows + k) == pytest.approx(ratio)


def _inputs(backbone, tmp_path, **params):
    methods = [{"name": "rehearsal", "params": {"buffer_size": 10, **params}}]
    return prepare_inputs(resolve(continual_run_config(backbone, tmp_path, methods)))


def test_buffer_holds_previous_rows_with_their_labels_and_draws_by_seed(tiny_backbone_dir, tmp_path):
    inputs = _inputs(tiny_backbone_dir, tmp_path, seed=3)
    replay = inputs.adapted.companions["rehearsal"]
    previous = inputs.adapted.previous
    assert len(replay.rows) == 10
    assert all(row in list(previous.train) for row in replay.rows)
    assert {row["labels"] for row in replay.rows} <= {0, 1}  # the previous labels' columns, not B's 2 and 3

    drawn = replay.draw(6)
    again = rehearsal.Replay(rehearsal.Params(buffer_size=10, seed=3))
    again.fill(previous)
    other = rehearsal.Replay(rehearsal.Params(buffer_size=10, seed=4))
    other.fill(previous)
    assert drawn["input_ids"].shape[0] == 6
    assert torch.equal(again.draw(6)["input_ids"], drawn["input_ids"])
    assert not torch.equal(other.draw(6)["input_ids"], drawn["input_ids"])
    texts = {tuple(row["input_ids"]) for row in replay.rows}
    for ids, mask in zip(drawn["input_ids"], drawn["attention_mask"], strict=True):
        assert tuple(ids[mask.bool()].tolist()) in texts


def test_step_loss_is_the_mean_over_new_and_replayed_rows(tiny_backbone_no_dropout_dir, tmp_path):
    inputs = _inputs(tiny_backbone_no_dropout_dir, tmp_path, ratio=0.25)
    adapted, replay = inputs.adapted, inputs.adapted.companions["rehearsal"]
    batch = inputs.collator([inputs.train[i] for i in range(6)])
    state = replay.generator.get_state()

    out = rehearsal.step(adapted, batch, lambda loss: None)

    replay.generator.set_state(state)
    old_batch = replay.draw(2)
    with torch.no_grad():
        new = adapted.loss(adapted.model(**batch), batch)
        old = adapted.loss(adapted.model(**old_batch), old_batch)
    assert set(old_batch["labels"].tolist()) <= {0, 1}
    torch.testing.assert_close(out.loss, (6 * new + 2 * old) / 8)
    torch.testing.assert_close(out.metrics["rehearsal_old"], old)


def test_image_run_replays_previous_images(tmp_path):
    """Image batches carry pixel_values, no input_ids: the mixed batch is sized by its labels."""
    sections = image_classification(tmp_path)
    backbone = sections.pop("model")["name_or_path"]
    previous = tmp_path / "previous-run"
    plan = resolve(toy_run_config(backbone, sections, [{"name": "full"}], previous))
    inputs = prepare_inputs(plan)
    save_model(inputs.adapted.model, inputs.tokenizer, previous / "best", run_info(plan, inputs))
    methods = [{"name": "rehearsal", "params": {"buffer_size": 10, "ratio": 0.5}}]
    inputs = prepare_inputs(resolve(toy_run_config(backbone, sections, methods, tmp_path / "run", previous)))
    batch = inputs.collator([inputs.train[i] for i in range(4)])

    out = rehearsal.step(inputs.adapted, batch, lambda loss: None)

    assert "input_ids" not in batch
    assert torch.isfinite(out.loss)
    assert set(out.metrics) == {"rehearsal_new", "rehearsal_old"}
    assert inputs.adapted.companions["rehearsal"].draw(3)["pixel_values"].shape[0] == 3
