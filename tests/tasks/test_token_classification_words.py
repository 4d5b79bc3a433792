"""NER on your own words: pre-split input (predict --tokens, /v1/predict tokens), scripts written without
spaces (Japanese), whitespace-only tokens, the [UNK] warning, and eval reporting training's baseline."""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datasets
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from typer.testing import CliRunner

from toy_tasks import save_tiny_bert, toy_tagged, write_conll
from tunelab.cli import app
from tunelab.config import validate_config
from tunelab.data import Columns
from tunelab.data.tagging import read_tagged_file, read_word_sentences
from tunelab.errors import DataError, TunelabError
from tunelab.inference.artifact import load_artifact
from tunelab.inference.predict import predict_records
from tunelab.serving.app import create_app
from tunelab.serving.predictor import load_predictor
from tunelab.serving.settings import ServeSettings
from tunelab.tasks import TASKS
from tunelab.tasks.spec import Predicted, tokenize_dataset
from tunelab.tasks.token_classification import (
    TASK,
    Params,
    TokensRequest,
    frequency_lexicon,
    lexicon_tags,
    postprocess,
    preprocess,
    raw_words,
    token_records,
    unspaced_text,
)
from tunelab.workflows.predict import prediction_records

KEY = "words-test-key-0123456789"
PLACES = ["南アフリカ共和国", "東京", "大阪"]
PEOPLE = ["山田", "田中"]
ORGS = [["国際", "連合"]]  # a two-word entity: B-ORG I-ORG
FILLER = ["の", "首都", "は", "に", "行く", "です", "今日", "明日", "会議", "で", "会う"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def japanese_tagged(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Japanese sentences split into words (as a segmenter would), places, people and orgs tagged."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens = rng.choices(FILLER, k=rng.randint(3, 7))
        tags = ["O"] * len(tokens)
        for _ in range(rng.randint(1, 2)):
            kind = rng.choice(["LOC", "PER", "ORG"])
            words = {"LOC": [rng.choice(PLACES)], "PER": [rng.choice(PEOPLE)], "ORG": rng.choice(ORGS)}[kind]
            at = rng.randrange(len(tokens) + 1)
            if (at > 0 and tags[at - 1] != "O") or (at < len(tags) and tags[at] != "O"):
                continue
            tokens[at:at] = words
            tags[at:at] = [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
        rows.append((tokens, tags))
    return rows


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone_dir: Path) -> Any:
    """The tiny fixture's English WordPiece tokenizer: Japanese is [UNK] to it."""
    return AutoTokenizer.from_pretrained(tiny_backbone_dir)


@pytest.fixture(scope="module")
def ja_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny BERT whose tokenizer has one token per Japanese word (a word-level vocab)."""
    out = tmp_path_factory.mktemp("ja-bert")
    words = [*PLACES, *PEOPLE, *(w for org in ORGS for w in org), *FILLER]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate([*SPECIALS, *words])}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    fast.save_pretrained(out)
    return save_tiny_bert(out, len(SPECIALS) + len(words))


@pytest.fixture(scope="module")
def ja_run(tmp_path_factory: pytest.TempPathFactory, ja_backbone_dir: Path) -> dict[str, Path]:
    """A NER model trained on Japanese words from CoNLL files (train, dev and a test file)."""
    tmp = tmp_path_factory.mktemp("ja-run")
    files = {
        split: write_conll(tmp / f"{split}.conll", japanese_tagged(n, seed))
        for split, n, seed in (("train", 96, 1), ("dev", 16, 2), ("test", 24, 3))
    }
    cfg = validate_config(
        {
            "model": {"name_or_path": str(ja_backbone_dir)},
            "data": {f"{split}_file": str(path) for split, path in files.items()},
            "task": {"name": "token_classification", "params": {"max_length": 32}},
            "train": {
                "output_dir": str(tmp / "run"),
                "num_train_epochs": 8,
                "batch_size": 8,
                "lr": 5e-3,
                "warmup_steps": 2,
                "save_steps": 1000,
                "seed": 7,
            },
        }
    )
    config = _write(tmp / "ner.yaml", json.dumps(cfg.model_dump(mode="json")))
    trained = CliRunner().invoke(app, ["train", str(config)])
    assert trained.exit_code == 0, trained.output
    return {**files, "best": tmp / "run" / "best"}


def _rounded(value: Any) -> Any:
    """A JSON value with its floats rounded to 5 decimals (scores computed in another batch)."""
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return [_rounded(v) for v in value] if isinstance(value, list) else value


def _json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


# --- whitespace-only tokens -------------------------------------------------------------------------


def test_whitespace_only_token_is_named_with_file_line(tmp_path: Path):
    conll = _write(
        tmp_path / "ja.conll", "東京\tB-LOC\n\u3000\tO\nに\tO\n\u00a0 O\n\n-DOCSTART-\n行く\tO\n\t\n"
    )
    with pytest.raises(DataError) as err:
        read_tagged_file(conll, "BIO", None)
    message = str(err.value)
    assert f"{conll}:2: token is only whitespace (U+3000 IDEOGRAPHIC SPACE); delete the line" in message
    assert f"{conll}:4: token is only whitespace (U+00A0 NO-BREAK SPACE)" in message
    assert "expected 'token<TAB>tag'" not in message
    jsonl = _write(tmp_path / "ja.jsonl", json.dumps({"tokens": ["東京", "\u3000"], "tags": ["B-LOC", "O"]}))
    with pytest.raises(
        DataError, match=r"ja.jsonl:1 token 1: token is only whitespace \(U\+3000 IDEOGRAPHIC"
    ):
        read_tagged_file(jsonl, "BIO", None)


def test_ascii_indented_and_tagless_lines_keep_their_old_meaning(tmp_path: Path):
    path = _write(tmp_path / "a.conll", "  good B-pos\nmovie\n")
    with pytest.raises(DataError) as err:
        read_tagged_file(path, "BIO", None)
    assert f"{path}:2: expected 'token<TAB>tag', got 'movie'" in str(err.value)
    assert ":1:" not in str(err.value)  # leading ASCII spaces are indentation, not a token


# --- pre-split input files ----------------------------------------------------------------------------


def test_word_sentences_from_conll_with_or_without_tags_and_from_jsonl(tmp_path: Path):
    tagged = _write(tmp_path / "t.conll", "-DOCSTART- -X- O O\n\n東京\tB-LOC\nに\tO\n\n行く\tO\n")
    bare = _write(tmp_path / "b.txt", "東京\nに\n\n行く\n\n\n")
    jsonl = _write(
        tmp_path / "w.jsonl", "".join(json.dumps({"words": w}) + "\n" for w in (["東京", "に"], ["行く"]))
    )
    expected = [["東京", "に"], ["行く"]]
    assert read_word_sentences(tagged) == read_word_sentences(bare) == expected
    assert read_word_sentences(jsonl, "words") == expected
    with pytest.raises(
        DataError, match=r"w.jsonl:1: expected a non-empty 'tokens' list of non-empty strings"
    ):
        read_word_sentences(jsonl)
    bad = _write(tmp_path / "bad.conll", "東京\n\u3000\n")  # a lone U+3000 line is a sentence break
    assert read_word_sentences(bad) == [["東京"]]
    nbsp = _write(tmp_path / "nbsp.conll", "東京\n\u00a0\tO\n")
    with pytest.raises(DataError, match=r"nbsp.conll:2: token is only whitespace \(U\+00A0 NO-BREAK SPACE\)"):
        read_word_sentences(nbsp)


# --- how raw text splits, recorded at fit -------------------------------------------------------------


def test_fit_records_whether_raw_text_splits_into_the_train_words():
    japanese = [t for t, _ in japanese_tagged(20, seed=0)]
    assert unspaced_text(japanese) == "refuse"
    chinese = [list("张三在北京工作"), list("李四去上海了")]
    assert unspaced_text(chinese) == "split"
    assert unspaced_text([*chinese] * 10 + [["2008年"]]) == "split"  # a few segmenter words: under 5%
    assert unspaced_text([["the", "movie"], ["Paris"]]) == "split"  # no such script at all
    assert unspaced_text([["ภาษา", "ไทย"]]) == "refuse"  # Thai words: split_words cannot find them
    rows = japanese_tagged(20, seed=0)
    train = {"tokens": [t for t, _ in rows], "tags": [g for _, g in rows]}
    fitted = TASK.fit(Params(), train, [])
    assert fitted.unspaced_text == "refuse"
    assert fitted.baseline_lexicon == frequency_lexicon(train["tokens"], train["tags"])
    assert TASK.fit(Params(unspaced_text="split"), train, []).unspaced_text == "split"


def test_raw_japanese_text_is_refused_when_training_words_were_longer(tokenizer):
    text = "南アフリカ共和国の首都"
    with pytest.raises(DataError) as err:
        raw_words(text, "refuse", 1)
    assert str(err.value).startswith(
        "input 2: raw text in a script written without spaces ('南') cannot be split into the words this "
        "model was trained on"
    )
    assert "--tokens" in str(err.value)
    assert '{"tokens": [[...]]}' in str(err.value)
    assert raw_words("the movie was good", "refuse", 0) == [
        "the",
        "movie",
        "was",
        "good",
    ]
    assert raw_words(text, "split", 0) == list(text)  # one CJK character a word
    words = ["南アフリカ共和国", "の", "首都"]
    batch = {"text": [words, "the movie"], "example_id": [0, 1]}
    features = preprocess(batch, tokenizer, Params(unspaced_text="refuse"), {})  # given words pass
    assert sorted(set(features["example_id"])) == [0, 1]


# --- given words: offsets into the words joined by spaces, word spans ---------------------------------


def test_given_words_give_entities_with_word_spans(tokenizer):
    labels = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    words = ["今日", "は", "国際", "連合", "と", "東京"]
    gold = ["O", "O", "B-ORG", "I-ORG", "O", "B-LOC"]
    features = preprocess({"text": [words], "example_id": [0]}, tokenizer, Params(), {})
    width = len(features["input_ids"][0])
    logits = np.zeros((1, width, len(labels)), dtype=np.float32)
    for position, word in enumerate(features["word_index"][0]):
        if word >= 0:
            logits[0, position, labels.index(gold[word])] = 5.0
    out = postprocess(Predicted({"logits": logits}, features, {"text": [words]}, labels, Params()))
    joined = " ".join(words)
    entities = out[0]["entities"]
    assert [(e["type"], e["text"], e["word_start"], e["word_end"]) for e in entities] == [
        ("ORG", "国際 連合", 2, 4),
        ("LOC", "東京", 5, 6),
    ]
    assert all(
        joined[e["start"] : e["end"]] == " ".join(words[e["word_start"] : e["word_end"]]) for e in entities
    )


# --- the [UNK] warning --------------------------------------------------------------------------------


def test_unknown_subwords_over_five_percent_are_warned_once_per_split(tokenizer, caplog):
    rows = japanese_tagged(1100, seed=4)  # more than one map batch (1000 rows): still one warning
    data = datasets.Dataset.from_dict({"tokens": [t for t, _ in rows], "tags": [g for _, g in rows]})
    labels = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    with caplog.at_level(logging.WARNING, logger="tunelab.tasks.token_classification"):
        tokenize_dataset(TASK, Params(max_length=64), tokenizer, data, labels)
    warnings = [r.getMessage() for r in caplog.records if "unknown token" in r.getMessage()]
    assert len(warnings) == 1, warnings
    # The share, measured here word by word on the first batch (1000 sentences) the warning reads.
    pieces = [tokenizer.tokenize(w) for t, _ in rows[:1000] for w in t]
    share = sum(p.count(tokenizer.unk_token) for p in pieces) / sum(len(p) for p in pieces)
    assert share > 0.05
    assert warnings[0].startswith(f"{100 * share:.1f}% of the sub-words of 1000 tagged sentences are the")
    assert "Pick a model whose tokenizer covers this script" in warnings[0]

    caplog.clear()
    english = toy_tagged(30, seed=1)
    data = datasets.Dataset.from_dict({"tokens": [t for t, _ in english], "tags": [g for _, g in english]})
    with caplog.at_level(logging.WARNING, logger="tunelab.tasks.token_classification"):
        tokenize_dataset(TASK, Params(), tokenizer, data, ["O", "B-neg", "I-neg", "B-pos", "I-pos"])
        preprocess({"text": [rows[0][0]], "example_id": [0]}, tokenizer, Params(), {})  # a request: never
    assert "unknown token" not in caplog.text


# --- the request body -----------------------------------------------------------------------------------


def test_request_takes_exactly_one_of_texts_or_word_lists():
    body = TokensRequest.model_validate({"tokens": [["東京", "に", "行く"], ["大阪"]]})
    assert token_records(body) == [{"text": ["東京", "に", "行く"]}, {"text": ["大阪"]}]
    assert token_records(TokensRequest.model_validate({"inputs": "a text"})) == [{"text": "a text"}]
    for bad, why in (
        ({"inputs": "a", "tokens": [["b"]]}, "exactly one of inputs"),
        ({}, "exactly one of inputs"),
        ({"tokens": [["東京", "\u3000"]]}, "tokens[0][1] is only whitespace"),
        ({"tokens": [[]]}, "at least 1 item"),
        ({"tokens": ["東京"]}, "list"),
    ):
        with pytest.raises(ValidationError, match=re.escape(why)):
            TokensRequest.model_validate(bad)


def test_frequency_lexicon_keeps_only_what_changes_a_tag():
    """The saved lexicon tags every word exactly as the whole most-frequent-tag table does."""
    rng = random.Random(0)
    vocab = ["Paris", "paris", "PARIS", "is", "Is", "nice", "Nice", "Bob", "bob"]
    tokens = [rng.choices(vocab, k=6) for _ in range(40)]
    tags = [[rng.choice(["O", "O", "B-loc", "B-per"]) for _ in t] for t in tokens]
    lexicon = frequency_lexicon(tokens, tags)
    counts: dict[str, dict[str, int]] = {}
    for words, word_tags in zip(tokens, tags, strict=True):
        for word, tag in zip(words, word_tags, strict=True):
            for key in (word, word.lower()):
                counts.setdefault(key, {}).setdefault(tag, 0)
                counts[key][tag] += 1
    full = {w: max(c, key=lambda t: (c[t], -list(c).index(t))) for w, c in counts.items()}
    probe = [*vocab, "PaRiS", "unseen"]
    assert lexicon_tags(lexicon, probe) == [full.get(w, full.get(w.lower(), "O")) for w in probe]
    assert len(lexicon) < len(full)


# --- trained on Japanese words: eval, predict, serve ---------------------------------------------------


def test_run_records_split_and_baseline_and_eval_reports_the_same_baseline(ja_run):
    info = json.loads((ja_run["best"] / "tunelab_run.json").read_text(encoding="utf-8"))
    assert info["task_params"]["unspaced_text"] == "refuse"
    assert info["task_params"]["baseline_lexicon"]["南アフリカ共和国"] == "B-LOC"
    reported = json.loads((ja_run["best"] / "metrics.json").read_text())["test"]
    scored = CliRunner().invoke(app, ["eval", str(ja_run["best"]), "--data", str(ja_run["test"])])
    assert scored.exit_code == 0, scored.output
    evaluated = json.loads(scored.stdout[scored.stdout.index("{") :])
    assert 0 < reported["baseline_f1"] <= 1
    for key in ("baseline_precision", "baseline_recall", "baseline_f1", "f1"):
        assert evaluated[key] == pytest.approx(reported[key]), key


def test_predict_refuses_raw_japanese_and_tags_given_words(ja_run, tmp_path: Path):
    runner = CliRunner()
    refused = runner.invoke(app, ["predict", str(ja_run["best"]), "--text", "今日は南アフリカ共和国に行く"])
    assert refused.exit_code == 1
    assert "error: input 1: raw text in a script written without spaces ('今')" in refused.output
    assert "--tokens" in refused.output

    words = ["今日", "は", "南アフリカ共和国", "に", "行く"]
    given = runner.invoke(app, ["predict", str(ja_run["best"]), "--tokens", "--text", " ".join(words)])
    assert given.exit_code == 0, given.output
    (line,) = _json_lines(given.stdout)
    assert line["text"] == words
    assert {
        "type": "LOC",
        "text": "南アフリカ共和国",
        "start": 5,
        "end": 13,
        "word_start": 2,
        "word_end": 3,
    }.items() <= (line["entities"][0].items())

    from_file = runner.invoke(
        app, ["predict", str(ja_run["best"]), "--tokens", "--file", str(ja_run["test"])]
    )
    assert from_file.exit_code == 0, from_file.output
    lines = _json_lines(from_file.stdout)
    assert [line["text"] for line in lines] == read_word_sentences(ja_run["test"])
    assert sum(len(line["entities"]) for line in lines) > 0


def test_tokens_flag_reads_whitespace_split_lines_and_is_refused_by_sentence_level_tasks():
    ner = SimpleNamespace(task=TASK, columns=Columns(text="text", label=None))
    stdin = ["東京 に\u3000行く\n", "\n", "大阪\n"]  # any whitespace separates words, blank lines skipped
    records = prediction_records(ner, [], None, None, stdin, tokens=True)
    assert records == [{"text": ["東京", "に", "行く"]}, {"text": ["大阪"]}]
    sentence_level = SimpleNamespace(
        task=TASKS.get("classification"), columns=Columns(text="text", label="label")
    )
    with pytest.raises(
        TunelabError, match=r"^--tokens: task classification takes raw text, not pre-split words"
    ):
        prediction_records(sentence_level, ["a b"], None, None, [], tokens=True)


def test_served_tokens_answer_as_predict_does(ja_run):
    best = ja_run["best"]
    art = load_artifact(best)
    schema = art.task.serve_schema
    assert schema is not None
    words = [["今日", "は", "南アフリカ共和国", "に", "行く"], ["山田", "は", "東京", "で", "会う"]]
    settings = ServeSettings(model_dir=str(best), api_key=KEY)
    with TestClient(create_app(settings, load_predictor(str(best))), headers={"X-API-Key": KEY}) as client:
        served = client.post("/v1/predict", json={"tokens": words})
        assert served.status_code == 200, served.text
        reference = predict_records(art, [{"text": w} for w in words], batch_size=len(words))
        expected = schema.build(served.json()["model"], reference).model_dump(mode="json")
        assert _rounded(served.json()) == _rounded(expected)
        assert served.json()["predictions"][0]["entities"][0]["text"] == "南アフリカ共和国"
        both = client.post("/v1/predict", json={"inputs": "東京", "tokens": [["東京"]]})
        assert both.status_code == 422
        assert "give exactly one of inputs (raw texts) or tokens" in both.text
        raw = client.post("/v1/predict", json={"inputs": ["Tokyo in English", "南アフリカ共和国に行く"]})
        assert raw.status_code == 422, raw.text
        error = raw.json()["error"]
        assert error["param"] == "inputs[1]"
        assert "cannot be split into the words this model was trained on" in error["message"]
        assert "tokens" in error["message"]
