"""embedding_classification: balanced pairs, zero-shot head = scaled cosine, K-shot learning, round trip."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch
from transformers import AutoTokenizer

from toy_tasks import TOY_TASKS, toy_rows, write_csv
from tunelab.config import validate_config
from tunelab.evaluation import evaluate
from tunelab.inference.artifact import load_artifact
from tunelab.inference.predict import predict_records
from tunelab.models.architectures import mean_pool
from tunelab.models.artifact import save_model
from tunelab.tasks import embedding_classification as ec
from tunelab.tasks.spec import load_with_labels
from tunelab.training import build_accelerator, prepare_inputs, resolve, train
from tunelab.workflows import run_info

LABELS = ["a", "a", "a", "b", "b", "c"]


def test_contrastive_pairs_are_balanced_labelled_and_seeded():
    pairs = ec.contrastive_pairs(LABELS, per_example=3, seed=0)
    assert len(pairs) == 2 * 3 * len(LABELS)
    assert Counter(target for _, _, target in pairs) == {1.0: 18, 0.0: 18}
    assert all((LABELS[i] == LABELS[j]) == (target == 1.0) for i, j, target in pairs)
    assert all(i != j for i, j, target in pairs if target == 1.0 and LABELS.count(LABELS[i]) > 1)
    assert pairs == ec.contrastive_pairs(LABELS, 3, seed=0) != ec.contrastive_pairs(LABELS, 3, seed=1)


def test_a_label_with_one_row_pairs_with_itself():
    pairs = ec.contrastive_pairs(LABELS, per_example=1, seed=0)
    assert (5, 5, 1.0) in pairs


@torch.no_grad()
def test_fresh_model_logits_are_scaled_cosine_to_label_descriptions(tiny_backbone_dir):
    params = ec.fit(
        ec.Params(descriptions={"positive": "a lovely film"}, scale=7.0), None, ["negative", "positive"]
    )
    model = load_with_labels(ec.TASK, tiny_backbone_dir, ["negative", "positive"], params).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    texts = ["the plot was awful", "great story"]

    logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits

    def embed(batch: list[str]) -> torch.Tensor:
        enc = tokenizer(batch, padding=True, return_tensors="pt")
        return mean_pool(model.bert(**enc).last_hidden_state, enc["attention_mask"])

    expected = 7.0 * embed(texts) @ embed(["negative", "a lovely film"]).T
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


def test_collator_stacks_both_sides_of_a_pair(tiny_backbone_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    params = ec.fit(ec.Params(), None, ["negative", "positive"])
    batch = {"text": ["good", "bad movie"], "label": ["positive", "negative"]}
    batch |= {
        "pair_text": ["the plot was bad", "awful"],
        "pair_label": ["negative", "negative"],
        "target": [0.0, 1.0],
    }
    features = ec.preprocess(batch, tokenizer, params, {"negative": 0, "positive": 1})
    rows = [dict(zip(features, values, strict=True)) for values in zip(*features.values(), strict=True)]

    collated = ec.collator(tokenizer, params)(rows)

    assert collated["input_ids"].shape[0] == 4
    assert collated["labels"].tolist() == [1, 0, 0, 0]
    assert collated["pair_targets"].tolist() == [0.0, 1.0]
    assert tokenizer.decode(collated["input_ids"][3], skip_special_tokens=True) == "awful"


def test_k_shot_training_lifts_accuracy_above_chance_and_round_trips(tiny_backbone_dir, tmp_path):
    """SetFit-style pairs from 16 rows per label through the real loop; the saved model predicts the same."""
    sections = TOY_TASKS["embedding_classification"](tmp_path)
    sections["data"] |= {
        "train_file": str(write_csv(tmp_path / "train.csv", toy_rows(120, seed=8))),
        "dev_file": str(write_csv(tmp_path / "dev.csv", toy_rows(48, seed=9))),
        "k_shot": 16,
    }
    sections["task"]["params"] |= {"pairs_per_example": 4, "head_lr_multiplier": 10}
    cfg = validate_config(
        {
            "model": {"name_or_path": str(tiny_backbone_dir)},
            **sections,
            "methods": [{"name": "full"}],
            "train": {
                "output_dir": str(tmp_path / "run"),
                "num_train_epochs": 6,
                "batch_size": 8,
                "lr": 3e-3,
                "seed": 3,
            },
        }
    )
    plan = resolve(cfg)
    inputs = prepare_inputs(plan)
    assert len(inputs.train) == 2 * 4 * 32  # pairs: (positive, negative) x rounds x K-shot rows
    scored = {"task": plan.task, "features": inputs.dev, "collator": inputs.collator, "labels": inputs.labels}
    before = evaluate(inputs.adapted.model, batch_size=16, params=inputs.task_params, **scored)

    train(plan, inputs, build_accelerator(plan.cfg.train))
    after = evaluate(inputs.adapted.model, batch_size=16, params=inputs.task_params, **scored)

    assert after["accuracy"] >= max(0.75, before["accuracy"] + 0.2), (before["accuracy"], after["accuracy"])
    save_model(inputs.adapted.model, inputs.tokenizer, tmp_path / "best", run_info(plan, inputs))
    loaded = load_artifact(tmp_path / "best")
    live = dataclasses.replace(loaded, model=inputs.adapted.model.eval())
    records = [{"text": text} for text, _ in toy_rows(6, seed=11)]
    assert predict_records(loaded, records, 4) == predict_records(live, records, 4)


def test_a_non_bert_model_is_refused(tmp_path):
    from toy_tasks import tiny_llama_dir
    from tunelab.errors import ConfigError

    with pytest.raises(ConfigError, match="pools a BERT encoder, not a llama model"):
        load_with_labels(ec.TASK, tiny_llama_dir(), ["a", "b"], ec.fit(ec.Params(), None, ["a", "b"]))
