"""Retrieval baselines: BM25 tokens and ranking, the untuned model = a saved untrained run, the CLI table."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from toy_tasks import TOY_TASKS, toy_run_config, write_csv
from tunelab.apps import baselines
from tunelab.cli import app
from tunelab.config import dump_config
from tunelab.models.artifact import save_model
from tunelab.tasks.retrieval.ranking import METRIC_NAMES
from tunelab.training import prepare_inputs, resolve
from tunelab.workflows import run_info


def test_bm25_tokens_are_lowercased_words_and_single_cjk_characters():
    assert baselines.bm25_tokens("What is AI?") == ["what", "is", "ai"]
    assert baselines.bm25_tokens("你好吗, Bot 2") == ["你", "好", "吗", "bot", "2"]


def toy_plan(tmp_path, tiny_backbone_dir, rows=None):
    sections = TOY_TASKS["retrieval"](tmp_path)
    if rows is not None:
        test = write_csv(tmp_path / "test.csv", rows, ("query", "positive"))
        sections["data"]["test_file"] = str(test)
    return resolve(toy_run_config(tiny_backbone_dir, sections, [{"name": "full"}], tmp_path / "run"))


def test_bm25_ranks_the_answer_sharing_a_rare_word_first(tmp_path, tiny_backbone_dir):
    rows = [("where is the kilobyte", "a kilobyte story"), ("zzz qqq", "a lovely story")]
    plan = toy_plan(tmp_path, tiny_backbone_dir, rows)
    data = plan.task.load_data(plan.cfg.data, plan.task_params, 0)

    got = baselines.bm25(plan, data, "test")

    # query 1: its answer alone holds "kilobyte" -> rank 1; query 2 shares no word with any candidate,
    # so all 11 candidates tie at 0 and its answer expects position 1 + 10/2 = 6
    assert got["recall@1"] == 0.5
    assert got["mrr"] == pytest.approx((1 + 1 / 6) / 2)
    assert set(got) == set(METRIC_NAMES)


def test_untuned_equals_a_saved_untrained_run_and_the_cli_prints_all_three(tmp_path, tiny_backbone_dir):
    plan = toy_plan(tmp_path, tiny_backbone_dir)
    inputs = prepare_inputs(plan)
    save_model(inputs.adapted.model, inputs.tokenizer, tmp_path / "untrained", run_info(plan, inputs))
    config = tmp_path / "retrieval.yaml"
    config.write_text(dump_config(plan.cfg), encoding="utf-8")

    result = CliRunner().invoke(
        app, ["apps", "baselines", str(config), "--split", "dev", "--run", str(tmp_path / "untrained")]
    )

    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert list(scores) == ["bm25", "untuned", "tuned"]
    for name in METRIC_NAMES:
        assert scores["tuned"][name] == pytest.approx(scores["untuned"][name], abs=1e-6)
    assert scores["bm25"]["mrr"] != pytest.approx(scores["untuned"]["mrr"])


def test_a_split_the_config_lacks_is_a_clear_error(tmp_path, tiny_backbone_dir):
    plan = toy_plan(tmp_path, tiny_backbone_dir)
    data = plan.task.load_data(plan.cfg.data, plan.task_params, 0)
    with pytest.raises(Exception, match="--split: 'test' is not a split of this config"):
        baselines.bm25(plan, data, "test")
