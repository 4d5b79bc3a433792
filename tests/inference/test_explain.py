"""Explanations: ig completeness, word-piece merging, rollout, faithfulness on a one-cue model, HTML, CLI."""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertForTokenClassification, GPT2Config, GPT2ForSequenceClassification
from typer.testing import CliRunner

import tunelab.workflows.predict
from toy_tasks import FILLER, tiny_modernbert_dir, toy_rows
from tunelab.cli import app
from tunelab.errors import ConfigError
from tunelab.evaluation.explanation_view import explanation_html, explanation_png
from tunelab.evaluation.faithfulness import deletion_drops
from tunelab.inference.explain import explain_one, explain_refusal, merge_pieces
from tunelab.models.int8 import quantize_int8
from tunelab.tasks import TASKS
from tunelab.tasks.spec import load_with_labels

CLS = TASKS.get("classification")
NER = TASKS.get("token_classification")
LABELS = ["negative", "positive"]


@dataclass
class Bound:
    """A model bound to its task, as ``inference.predict.Predictable`` asks."""

    model: torch.nn.Module
    tokenizer: Any
    task: Any
    task_params: Any
    labels: list[str]


class CueClassifier(torch.nn.Module):
    """P(positive) = sigmoid(6 * [number of "good" tokens] - 3): the one cue token decides the class."""

    def __init__(self, vocab_size: int, cue_id: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, 1)
        with torch.no_grad():
            self.embed.weight.zero_()
            self.embed.weight[cue_id] = 6.0

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.embed

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> Any:
        score = (self.embed(input_ids)[..., 0] * attention_mask).sum(-1) - 3.0  # (B,)
        return SimpleNamespace(logits=torch.stack([-score / 2, score / 2], -1))


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_backbone_dir)


@pytest.fixture(scope="module")
def cue_model(tokenizer: Any) -> Bound:
    cue = tokenizer.convert_tokens_to_ids("good")
    assert cue != tokenizer.unk_token_id
    model = CueClassifier(len(tokenizer), cue)
    return Bound(model, tokenizer, CLS, CLS.params(labels=LABELS, max_length=32), LABELS)


@pytest.fixture(scope="module")
def tiny_ner(tiny_backbone_dir: Path, tokenizer: Any) -> Bound:
    """The tiny random BERT as a tagger, its classifier scaled up so each word moves its tag a lot."""
    tags = ["O", "B-pos", "I-pos", "B-neg", "I-neg"]
    torch.manual_seed(0)
    model = BertForTokenClassification.from_pretrained(tiny_backbone_dir, num_labels=len(tags)).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)
    return Bound(model, tokenizer, NER, NER.params(labels=tags, max_length=32), tags)


def test_ig_attributions_sum_to_the_probability_change_from_the_pad_baseline(tiny_ner: Bound):
    """Two entities explained in one batched call: each sums to its own tag's change (completeness)."""
    words = ["the", "plot", "was", "superb", "but", "quite", "dull"]
    prediction = {"entities": [{"word_start": 1}, {"word_start": 5}]}
    explanations = explain_one(tiny_ner, {"text": words}, prediction, "ig", steps=64)
    enc = tiny_ner.tokenizer(words, is_split_into_words=True, return_tensors="pt")
    baseline = enc["input_ids"].clone()
    baseline[0, 1:-1] = tiny_ner.tokenizer.pad_token_id  # [CLS] and [SEP] kept
    with torch.no_grad():
        probs = [tiny_ner.model(input_ids=ids).logits.softmax(-1)[0] for ids in (enc["input_ids"], baseline)]
    assert [e["word"] for e in explanations] == [1, 5]
    for explanation in explanations:
        position = enc.word_ids(0).index(explanation["word"])
        label = tiny_ner.labels.index(explanation["target"])
        assert label == int(probs[0][position].argmax())
        change = float(probs[0][position, label] - probs[1][position, label])
        assert abs(change) > 0.05  # the check below means something
        assert sum(w["score"] for w in explanation["words"]) == pytest.approx(change, abs=0.01)
        assert abs(explanation["convergence_delta"]) < 0.01
        assert explanation["probability"] == pytest.approx(float(probs[0][position, label]), abs=1e-5)


def test_target_label_is_explained_instead_of_the_prediction(cue_model: Bound):
    [positive] = explain_one(cue_model, {"text": "a good plot"}, {}, "ig")
    [negative] = explain_one(cue_model, {"text": "a good plot"}, {}, "ig", target="negative")
    assert (positive["target"], negative["target"]) == ("positive", "negative")
    good = [w["text"] for w in positive["words"]].index("good")
    assert positive["words"][good]["score"] > 0.5 > -0.5 > negative["words"][good]["score"]


def test_word_pieces_merge_into_the_words_of_the_text(tokenizer: Any):
    text = "unbelievably superbness,  ok"
    ex = CLS.explain_input({"text": text}, tokenizer, CLS.params(max_length=32))
    assert ex.words == ["unbelievably", "superbness", ",", "ok"]
    assert [text[a:b] for a, b in ex.spans] == ex.words
    assert len(ex.features["input_ids"]) > len(ex.words) + 2  # words were split into pieces
    scores = np.arange(len(ex.word_ids), dtype=float)[None]  # token i scores i
    expected = [sum(i for i, w in enumerate(ex.word_ids) if w == word) for word in range(len(ex.words))]
    assert merge_pieces(scores, ex.word_ids, len(ex.words))[0].tolist() == expected


@pytest.mark.parametrize("text", ["Anna visited Paris-Nord yesterday", ["Anna", "visited", "Paris-Nord"]])
def test_ner_words_are_the_words_prediction_tags(tokenizer: Any, text: Any):
    ex = NER.explain_input({"text": text}, tokenizer, NER.params())
    words = text if isinstance(text, list) else ["Anna", "visited", "Paris-Nord", "yesterday"]
    assert ex.words == words
    assert [ex.text[a:b] for a, b in ex.spans] == words
    assert sorted(set(ex.word_ids) - {-1}) == list(range(len(words)))


def test_rollout_restores_the_attention_kernel_and_spreads_unit_mass(tiny_ner: Bound):
    before = tiny_ner.model.config._attn_implementation
    [explanation] = explain_one(tiny_ner, {"text": "a dull plot and a lovely scene"}, {}, "rollout", word=1)
    scores = [w["score"] for w in explanation["words"]]
    assert tiny_ner.model.config._attn_implementation == before
    assert min(scores) >= 0
    assert 0.2 < sum(scores) < 1.0  # rows of the rollout sum to 1; [CLS] and [SEP] keep the rest


def test_rollout_of_a_decoder_classifier_starts_at_the_last_token_its_head_pools(tokenizer: Any):
    """Under causal attention the first token sees only itself: rolled out from there, no word scores."""
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64, num_labels=2
    )
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    bound = Bound(
        GPT2ForSequenceClassification(config).eval(), tokenizer, CLS, CLS.params(max_length=32), LABELS
    )
    [explanation] = explain_one(bound, {"text": "a dull plot and a lovely scene"}, {}, "rollout")
    scores = [w["score"] for w in explanation["words"]]
    assert min(scores) >= 0
    assert 0.2 < sum(scores) < 1.0  # the last token ([SEP]) attends to every word


def test_rollout_of_a_mean_pooling_classifier_is_the_mean_of_every_tokens_rollout(tokenizer: Any):
    model = load_with_labels(CLS, tiny_modernbert_dir(), LABELS, CLS.params(classifier_pooling="mean")).eval()
    bound = Bound(model, AutoTokenizer.from_pretrained(tiny_modernbert_dir()), CLS, CLS.params(), LABELS)
    record = {"text": "a dull plot and a lovely scene"}
    [mean] = explain_one(bound, record, {}, "rollout")
    model.config.classifier_pooling = "cls"
    [first] = explain_one(bound, record, {}, "rollout")
    scores = [w["score"] for w in mean["words"]]
    assert min(scores) >= 0
    assert 0.2 < sum(scores) < 1.0
    assert scores != [w["score"] for w in first["words"]]  # not [CLS]'s row: every token's row counts


def test_deleting_top_attributed_words_drops_probability_more_than_random(cue_model: Bound):
    rng = np.random.default_rng(0)
    texts = [text for text, label in toy_rows(40, seed=5) if label == "positive"]
    texts = [t.replace(w, "good") for t in texts for w in t.split() if w not in FILLER][:12]
    tops, randoms = [], []
    for text in texts:
        [explanation] = explain_one(cue_model, {"text": text}, {}, "ig")
        [drops] = deletion_drops(cue_model, {"text": text}, explanation, [1], 4, rng)
        tops.append(drops.top)
        randoms.append(drops.random)
    assert np.mean(tops) > 0.8  # deleting "good" takes P(positive) from 0.95 to 0.05
    assert np.mean(randoms) < 0.4


def test_html_escapes_the_input_text():
    text = "<script>alert(1)</script> & good"
    start = text.index("good")
    words = [{"text": "good", "start": start, "end": start + 4, "score": 0.5}]
    explanation = {"target": "<b>", "word": None, "probability": 0.9, "method": "ig", "words": words}
    page = explanation_html(text, [explanation])
    assert "<script>" not in page
    assert "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; " in page
    assert 'title="+0.5000">good</span>' in page


def test_png_shows_dollar_signs_as_text():
    """Words and labels are the input's text, never matplotlib mathtext (``$^$`` failed to parse)."""
    texts = ["$^$", "$\\foo$", "$5-$10"]
    words = [{"text": t, "start": 0, "end": len(t), "score": 0.5 - i} for i, t in enumerate(texts)]
    explanation = {"target": "$_{$", "word": 0, "probability": 0.9, "method": "ig", "words": words}
    assert explanation_png([explanation])[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_explain_writes_html_and_png_atomically(classifier_dir: Path, tmp_path: Path, monkeypatch):
    written = []
    atomic = tunelab.workflows.predict.atomic_write

    def spy(path: Path, data: Any) -> None:
        written.append(path)
        atomic(path, data)

    monkeypatch.setattr(tunelab.workflows.predict, "atomic_write", spy)
    html, png = tmp_path / "out" / "e.html", tmp_path / "out" / "e.png"
    html.parent.mkdir()
    args = [
        "explain",
        str(classifier_dir),
        "--text",
        "a <i>dull</i> plot",
        "--html",
        str(html),
        "--png",
        str(png),
    ]
    result = CliRunner().invoke(app, [*args, "--steps", "8"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert [w["text"] for w in out["explanations"][0]["words"]] == [
        "a",
        "<",
        "i",
        ">",
        "dull",
        "<",
        "/",
        "i",
        ">",
        "plot",
    ]
    assert out["explanations"][0]["target"] == out["label"]
    assert written == [html, png]
    assert sorted(p.name for p in html.parent.iterdir()) == ["e.html", "e.png"]  # no temp files left
    page = html.read_text()
    assert "<i>" not in page
    assert ">&lt;</span>" in page
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_explain_names_an_unknown_target(classifier_dir: Path):
    result = CliRunner().invoke(app, ["explain", str(classifier_dir), "--text", "a plot", "--target", "meh"])
    assert result.exit_code == 2
    assert "'meh' is not a label" in result.output


def test_cli_explain_refuses_an_unknown_method_before_loading_the_model(tmp_path: Path, monkeypatch):
    def load(*_: Any) -> None:
        raise AssertionError("the model was loaded before --method was checked")

    monkeypatch.setattr(tunelab.workflows.predict, "load_artifact", load)
    result = CliRunner().invoke(app, ["explain", str(tmp_path), "--text", "a plot", "--method", "shap"])
    assert result.exit_code == 2
    assert "'shap' is not an explanation method; choose ig or rollout" in result.output


def test_int8_model_refuses_ig_and_explains_with_rollout(tiny_ner: Bound):
    int8 = dataclasses.replace(tiny_ner, model=quantize_int8(copy.deepcopy(tiny_ner.model)))
    assert explain_refusal(tiny_ner.model, "ig") is None
    assert "use rollout" in str(explain_refusal(int8.model, "ig"))
    with pytest.raises(ConfigError, match="use rollout"):
        explain_one(int8, {"text": ["a", "dull", "plot"]}, {}, "ig", word=1)
    [explanation] = explain_one(int8, {"text": ["a", "dull", "plot"]}, {}, "rollout", word=1)
    assert [w["text"] for w in explanation["words"]] == ["a", "dull", "plot"]
