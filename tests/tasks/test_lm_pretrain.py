"""lm_pretrain: dynamic masking, perplexity that falls on a learnable corpus, blocks, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from toy_tasks import lm_pretrain as toy_lm
from tunelab.data.readers import read_lines
from tunelab.errors import ConfigError, DataError
from tunelab.evaluation import evaluate
from tunelab.tasks.lm_pretrain import TASK, Params, group_blocks
from tunelab.training import prepare_inputs, resolve, train


def _rows(features):
    return [dict(zip(features, values, strict=True)) for values in zip(*features.values(), strict=True)]


def test_blocks_keep_every_token_in_order_and_aligned():
    columns = {
        "input_ids": [[1, 2, 3], [4, 5], [6, 7, 8, 9]],
        "special_tokens_mask": [[1, 0, 1], [0, 1], [1, 0, 0, 1]],
    }
    blocks = group_blocks(columns, 4)
    assert blocks["input_ids"] == [[1, 2, 3, 4], [5, 6, 7, 8], [9]]
    assert blocks["special_tokens_mask"] == [[1, 0, 1, 0], [1, 1, 0, 0], [1]]


def test_masks_are_dynamic_but_evaluation_masks_are_fixed(make_config, tmp_path: Path):
    plan = resolve(make_config(**toy_lm(tmp_path)))
    inputs = prepare_inputs(plan)
    rows = _rows(inputs.train[:8])
    first, second = inputs.collator(rows)["labels"], inputs.collator(rows)["labels"]
    assert not torch.equal(first != -100, second != -100)  # a new draw per batch build (each epoch)
    masked = (first != -100).float().mean().item()
    assert 0.05 < masked < 0.3  # mlm_probability 0.15 of the non-special tokens
    model = inputs.adapted.model
    scores = [evaluate(model, TASK, inputs.dev, inputs.collator, [], 8) for _ in range(2)]
    assert scores[0] == scores[1]
    assert scores[0]["n_tokens"] > 0


TINY_SCRATCH = {"vocab_size": 200, "min_frequency": 1, "hidden_size": 32, "layers": 2, "heads": 2}


@pytest.mark.parametrize("architecture", [None, "modernbert"])
def test_perplexity_falls_on_a_learnable_corpus(make_config, tmp_path: Path, architecture: str | None):
    """On the tiny BERT fixture, and on a ModernBERT built from scratch (its sparse MLM head in training)."""
    sections = toy_lm(tmp_path)
    if architecture is not None:
        sections["model"] = {"name_or_path": "scratch"}
        sections["task"]["params"]["from_scratch"] = {**TINY_SCRATCH, "architecture": architecture}
    cfg = make_config(
        **{**sections, "train": {"num_train_epochs": 6, "metric_for_best_model": "perplexity", "lr": 5e-3}}
    )
    plan = resolve(cfg)
    assert not plan.higher_is_better
    inputs = prepare_inputs(plan)

    def score(model):
        return evaluate(model, TASK, inputs.dev, inputs.collator, [], 16)

    before = score(inputs.adapted.model)["perplexity"]
    result = train(plan, inputs, Accelerator(cpu=True), evaluate=score)
    after = score(inputs.adapted.model)["perplexity"]
    assert after < 0.5 * before, (before, after)
    assert result.best_metric == pytest.approx(min(after, result.best_metric))


def test_causal_objective_on_an_encoder_is_refused(make_config, tmp_path: Path):
    sections = toy_lm(tmp_path)
    sections["task"]["params"]["objective"] = "clm"
    with pytest.raises(ConfigError, match="objective: 'clm' does not fit a bert model"):
        prepare_inputs(resolve(make_config(**sections)))


def test_scratch_model_name_and_params_go_together(make_config, tmp_path: Path):
    with pytest.raises(ConfigError, match="'scratch' goes with task.params.from_scratch"):
        resolve(make_config(**toy_lm(tmp_path), model={"name_or_path": "scratch"}))
    with pytest.raises(ValueError, match="architecture llama trains objective clm"):
        Params(from_scratch={"architecture": "llama"})


def test_bad_corpus_lines_are_reported_with_file_and_line(tmp_path: Path):
    path = tmp_path / "corpus.txt"
    path.write_bytes("第一行\n\n第三行\n".encode() + b"\xff\xfe bad\n")
    texts, problems = read_lines(path)
    assert texts == ["第一行", "第三行"]
    assert [where for where, _ in problems] == [f"{path}:2", f"{path}:4"]
    assert "empty line" in problems[0][1]
    assert "not UTF-8" in problems[1][1]


def test_training_refuses_a_corpus_with_bad_lines(make_config, tmp_path: Path):
    sections = toy_lm(tmp_path)
    Path(sections["data"]["train_file"]).write_text("good line\n\nanother\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"lm_train.txt:2: empty line"):
        prepare_inputs(resolve(make_config(**sections)))
