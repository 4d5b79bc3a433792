"""retrieval: metrics vs references, masked in-batch loss, data contract, learning, round trip, serving."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from sklearn.metrics import ndcg_score
from transformers import AutoModel, AutoModelForSequenceClassification

from served_models import close, serve
from toy_tasks import (
    TOY_TASKS,
    tiny_modernbert_dir,
    toy_retrieval_rows,
    toy_run_config,
    write_csv,
    write_jsonl,
)
from tunelab.config import DataConfig
from tunelab.errors import ConfigError, DataError
from tunelab.evaluation import evaluate
from tunelab.inference.artifact import load_artifact
from tunelab.inference.predict import predict_records
from tunelab.models.artifact import save_model
from tunelab.models.load import load_pretrained, load_tokenizer
from tunelab.tasks import TASKS, retrieval
from tunelab.tasks.retrieval import data as rdata
from tunelab.tasks.retrieval.ranking import NO_GOLD, gold_ranks, ranking_metrics
from tunelab.tasks.spec import load_with_labels
from tunelab.training import build_accelerator, prepare_inputs, resolve, train
from tunelab.workflows import run_info


def random_case(seed: int, queries: int = 40, candidates: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Tie-free scores (Q, N) and 1-4 relevant ids per query, padded with NO_GOLD."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(queries, candidates, generator=gen)
    gold = torch.full((queries, 4), NO_GOLD)
    for q in range(queries):
        n = int(torch.randint(1, 5, (1,), generator=gen))
        gold[q, :n] = torch.randperm(candidates, generator=gen)[:n]
    return scores, gold


def brute_force(scores: torch.Tensor, gold: torch.Tensor) -> dict[str, float]:
    """Per-query loops over the fully sorted candidate list."""
    out: dict[str, list[float]] = {"mrr": [], "recall@1": [], "recall@5": [], "recall@10": []}
    for row, ids in zip(scores.tolist(), gold.tolist(), strict=True):
        relevant = {i for i in ids if i != NO_GOLD}
        ranking = sorted(range(len(row)), key=lambda i: -row[i])
        first = next(pos for pos, i in enumerate(ranking, start=1) if i in relevant)
        out["mrr"].append(1 / first)
        for k in (1, 5, 10):
            out[f"recall@{k}"].append(len(relevant & set(ranking[:k])) / len(relevant))
    return {name: float(np.mean(values)) for name, values in out.items()}


@pytest.mark.parametrize("seed", [0, 1])
def test_ranking_metrics_equal_brute_force_and_sklearn_ndcg(seed):
    scores, gold = random_case(seed)
    got = ranking_metrics(gold_ranks(scores, gold).numpy())
    want = brute_force(scores, gold)
    relevance = np.zeros(scores.shape)
    for q, ids in enumerate(gold.tolist()):
        relevance[q, [i for i in ids if i != NO_GOLD]] = 1
    want["ndcg@10"] = ndcg_score(relevance, scores.numpy(), k=10)
    assert got == pytest.approx(want, abs=1e-9)


def test_gold_ranks_are_positions_in_the_full_ranking_and_zero_for_padding():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7]])
    ranks = gold_ranks(scores, torch.tensor([[2, 1, NO_GOLD]]))
    assert ranks.tolist() == [[3, 1, 0]]


def test_tied_candidates_split_the_positions_they_share():
    """A gold tied with 3 others at 0 (no word in common) expects position 2 + 3/2, not first place."""
    scores = torch.tensor([[0.0, 0.8, 0.0, 0.0, 0.0]])
    assert gold_ranks(scores, torch.tensor([[0]])).tolist() == [[3.5]]


def test_in_batch_loss_without_duplicates_is_cross_entropy_over_the_batch():
    gen = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(6, 8, generator=gen), dim=-1)
    p = F.normalize(torch.randn(6, 8, generator=gen), dim=-1)
    params = retrieval.Params(scale=10.0)
    none = torch.zeros(6, 6, dtype=torch.bool)
    want = F.cross_entropy(10.0 * q @ p.T, torch.arange(6))
    torch.testing.assert_close(retrieval.in_batch_loss(q, p, none, params), want)
    symmetric = retrieval.Params(scale=10.0, symmetric=True)
    both = (want + F.cross_entropy(10.0 * p @ q.T, torch.arange(6))) / 2
    torch.testing.assert_close(retrieval.in_batch_loss(q, p, none, symmetric), both)
    smoothed = F.cross_entropy(10.0 * q @ p.T, torch.arange(6), label_smoothing=0.2)
    torch.testing.assert_close(retrieval.in_batch_loss(q, p, none, params, 0.2), smoothed)


def test_a_duplicated_positive_is_not_a_negative():
    """Rows 0 and 2 share their positive; rows 1 and 3 their query: each loop row drops those columns."""
    gen = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    p = F.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    outputs = type("Out", (), {"embeddings": torch.cat([q, p])})()
    batch = {"gold_ids": torch.tensor([[7], [3], [7], [5]]), "query_ids": torch.tensor([0, 1, 2, 1])}
    params = retrieval.Params(scale=5.0)
    got = retrieval.loss(outputs, batch, params)
    dropped = {0: {2}, 1: {3}, 2: {0}, 3: {1}}
    losses = []
    for i in range(4):
        columns = [j for j in range(4) if j not in dropped[i]]
        logits = 5.0 * q[i] @ p[columns].T
        losses.append(-logits.log_softmax(-1)[columns.index(i)])
    torch.testing.assert_close(got, torch.stack(losses).mean())
    unmasked = F.cross_entropy(5.0 * q @ p.T, torch.arange(4))
    assert not torch.isclose(got, unmasked)


def config(tmp_path: Path, **data: Any) -> DataConfig:
    return DataConfig(train_file=tmp_path / "train.csv", **data)


def test_data_splits_by_query_and_ranks_against_every_positive_and_the_corpus(tmp_path):
    rows = [(f"q{i % 10}", f"a{i % 7}") for i in range(30)]  # 10 queries, several positives each
    write_csv(tmp_path / "train.csv", rows + rows[:3], ("query", "positive"))  # duplicates dropped
    write_jsonl(tmp_path / "test.jsonl", [{"query": "new", "positive": "only in test"}])
    write_jsonl(tmp_path / "corpus.jsonl", [{"text": "extra"}, {"text": "a1"}])
    params = retrieval.Params(corpus_file=tmp_path / "corpus.jsonl")

    got = rdata.load_data(config(tmp_path, test_file=tmp_path / "test.jsonl", dev_ratio=0.3), params, 0)

    assert set(got.train["text"]).isdisjoint(got.dev["text"])
    assert len(got.train) + sum(map(len, got.dev["positives"])) == 30
    assert got.labels == [*dict.fromkeys(p for _, p in rows), "only in test", "extra"]
    assert got.test["positives"] == [["only in test"]]
    ids = got.train["query_id"]
    assert all(
        (ids[i] == ids[j]) == (got.train["text"][i] == got.train["text"][j])
        for i in range(9)
        for j in range(9)
    )


def test_bad_rows_are_reported_with_file_and_line(tmp_path):
    write_csv(tmp_path / "train.csv", [("q", "a"), ("", "b"), ("q2", " ")], ("query", "positive"))
    with pytest.raises(DataError, match=r"train\.csv:3: .*'query'(.|\n)*train\.csv:4: .*'positive'"):
        rdata.load_data(config(tmp_path), retrieval.Params(), 0)


def test_eval_file_positives_must_be_candidates_of_the_model(tmp_path):
    path = write_csv(tmp_path / "eval.csv", [("q", "a"), ("q", "b"), ("r", "zzz")], ("query", "positive"))
    with pytest.raises(DataError, match=r"eval\.csv:4: positive is not among the model's candidates"):
        rdata.read_eval(path, None, retrieval.Params(), ["a", "b"])
    ok = write_csv(tmp_path / "ok.csv", [("q", "a"), ("q", "b"), ("r", "a")], ("query", "positive"))
    assert rdata.read_eval(ok, None, retrieval.Params(), ["a", "b"])["positives"] == [["a", "b"], ["a"]]


@pytest.fixture(scope="module")
def trained(tiny_backbone_dir, tmp_path_factory):
    """40 steps on 96 toy pairs, dev MRR before and after, and the saved best/ directory."""
    tmp = tmp_path_factory.mktemp("retrieval")
    sections = TOY_TASKS["retrieval"](tmp)
    train_rows = [(r["query"], r["positive"]) for r in toy_retrieval_rows(96, seed=5)]
    sections["data"]["train_file"] = str(write_csv(tmp / "train.csv", train_rows, ("query", "positive")))
    cfg = toy_run_config(tiny_backbone_dir, sections, [{"name": "full"}], tmp / "run", max_steps=40, lr=3e-3)
    plan = resolve(cfg)
    inputs = prepare_inputs(plan)
    model = inputs.adapted.model
    scored = {"task": plan.task, "features": inputs.dev, "collator": inputs.collator, "labels": inputs.labels}
    before = evaluate(model, batch_size=8, params=inputs.task_params, **scored)
    train(plan, inputs, build_accelerator(plan.cfg.train))
    after = evaluate(model, batch_size=8, params=inputs.task_params, **scored)
    save_model(model, inputs.tokenizer, tmp / "best", run_info(plan, inputs))
    return before, after, model, tmp / "best"


def test_training_lifts_dev_ranking_above_the_untrained_model(trained):
    before, after, _, _ = trained
    assert after["mrr"] >= before["mrr"] + 0.1, (before, after)
    assert after["loss"] < before["loss"]
    assert after["n_candidates"] == 10


def test_saved_model_holds_its_candidates_and_predicts_as_the_trained_one(trained):
    _, _, model, best = trained
    loaded = load_artifact(best)
    assert len(loaded.labels) == 10
    stored = load_file(best / "model.safetensors")
    assert torch.equal(stored["candidate_input_ids"], model.candidate_input_ids)
    live = dataclasses.replace(loaded, model=model.eval())
    records = [{"text": "the plot was good"}, {"text": "a dull scene", "top_k": 2}]
    got = predict_records(loaded, records, 4)
    assert got == predict_records(live, records, 4)
    assert [len(p["hits"]) for p in got] == [5, 2]
    assert got[0]["hits"][0]["text"] == "a good story"
    scores = [h["score"] for h in got[0]["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_candidate_embeddings_follow_the_weights(trained):
    """The cache is rebuilt after an in-place weight change, so evaluation never ranks stale vectors."""
    _, _, model, best = trained
    model = load_artifact(best).model
    first = model.candidate_embeddings().clone()
    assert model.candidate_embeddings() is model.candidate_embeddings()  # cached while nothing changes
    with torch.no_grad():
        model.encoder.encoder.layer[0].output.dense.weight.mul_(1.5)
    second = model.candidate_embeddings()
    fresh = model._embed_candidates()
    assert not torch.allclose(first, second)
    torch.testing.assert_close(second, fresh)


def test_served_top_k_follows_the_request(trained):
    _, _, _, best = trained
    art = load_artifact(best)
    with serve(best) as client:
        default = client.post("/v1/predict", json={"inputs": "the plot was good"})
        asked = client.post("/v1/predict", json={"inputs": ["the plot was good", "dull"], "top_k": 3})
        too_many = client.post("/v1/predict", json={"inputs": "x", "top_k": 1000})
    assert default.status_code == asked.status_code == 200
    assert len(default.json()["predictions"][0]["hits"]) == 5
    want = predict_records(art, [{"text": "the plot was good", "top_k": 3}, {"text": "dull", "top_k": 3}], 8)
    close(asked.json()["predictions"], want)
    assert too_many.status_code == 422


def test_a_modernbert_mlm_checkpoint_is_a_tower_too(tmp_path):
    """tunelab's Chinese backbone is a ModernBERT MLM checkpoint: its encoder trains and round-trips."""
    sections = {**TOY_TASKS["retrieval"](tmp_path), "model": {"name_or_path": str(tiny_modernbert_dir())}}
    cfg = toy_run_config(tiny_modernbert_dir(), sections, [{"name": "full"}], tmp_path / "run", max_steps=2)
    plan = resolve(cfg)
    inputs = prepare_inputs(plan)
    train(plan, inputs, build_accelerator(plan.cfg.train))
    save_model(inputs.adapted.model, inputs.tokenizer, tmp_path / "best", run_info(plan, inputs))
    loaded = load_artifact(tmp_path / "best")
    live = dataclasses.replace(loaded, model=inputs.adapted.model.eval())
    records = [{"text": "the plot was good"}, {"text": "a dull scene"}]
    close(predict_records(loaded, records, 4), predict_records(live, records, 4))
    assert type(loaded.model.encoder).__name__ == "ModernBertModel"


@pytest.mark.parametrize("model_class", [AutoModelForSequenceClassification, AutoModel])
def test_a_saved_bi_encoder_is_a_backbone_with_its_trained_tower(trained, model_class, tmp_path):
    """A retrieval run's best/ starts another task: every tower tensor from the file, only a fresh head."""
    _, _, model, best = trained
    loaded, info = load_pretrained(model_class, best, ["a", "b", "c"], output_loading_info=True)
    fresh = {key.removeprefix("bert.") for key in info["missing_keys"]}
    assert fresh == (
        {"classifier.weight", "classifier.bias"}
        if model_class is AutoModelForSequenceClassification
        else set()
    ) | {"pooler.dense.weight", "pooler.dense.bias"}
    tower = model.encoder.state_dict()
    backbone = getattr(loaded, "bert", loaded).state_dict()
    assert set(backbone) - set(tower) <= {"pooler.dense.weight", "pooler.dense.bias"}
    for key, value in tower.items():  # ... and every tensor of the trained tower is loaded
        assert torch.equal(backbone[key], value), key
    loaded.save_pretrained(tmp_path)  # and it saves as its own class, reloading every tensor as saved
    again = load_pretrained(model_class, tmp_path, ["a", "b", "c"], output_loading_info=True)
    assert not again[1]["missing_keys"]
    for key, value in loaded.state_dict().items():
        assert torch.equal(again[0].state_dict()[key], value), key


def test_a_bi_encoder_starts_an_embedding_classifier_from_its_trained_encoder(trained):
    """embedding_classification from a retrieval run: its trained tower, and the zero-shot head on it."""
    _, _, model, best = trained
    task = TASKS.get("embedding_classification")
    labels = ["good", "dull"]
    descriptions = {"good": "a good story", "dull": "a dull scene"}
    params = task.fit(task.params(descriptions=descriptions), None, labels)
    loaded, info = load_with_labels(task, best, labels, params, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    backbone = loaded.bert.state_dict()
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(backbone[key], value), key
    tokens = load_tokenizer(best)(list(descriptions.values()), padding=True, return_tensors="pt")
    with torch.no_grad():
        embedded = model.eval().embed(tokens["input_ids"], tokens["attention_mask"])
    head = loaded.classifier.weight * loaded.config.head_lr_multiplier
    torch.testing.assert_close(head, embedded * params.scale)


def test_a_bi_encoder_start_refuses_a_setting_its_architecture_lacks(trained):
    _, _, _, best = trained  # a BERT tower: no classifier_pooling
    with pytest.raises(ConfigError, match="classifier_pooling"):
        load_pretrained(AutoModelForSequenceClassification, best, ["a", "b"], classifier_pooling="mean")
