"""NER task: readers and scheme checks, subword alignment and chunking, spans, metrics, the CLI round trip."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from typer.testing import CliRunner

from toy_tasks import token_classification, toy_tagged, write_conll
from tunelab.cli import app
from tunelab.config import DataConfig
from tunelab.data.tagging import load_tagged_data, read_tagged_file
from tunelab.errors import DataError
from tunelab.inference.artifact import load_artifact
from tunelab.inference.predict import predict_records
from tunelab.models.load import label_maps
from tunelab.tasks.spec import IGNORE_INDEX, Predicted, tokenize_dataset
from tunelab.tasks.token_classification import (
    TASK,
    Params,
    frequency_lexicon,
    lexicon_tags,
    metrics,
    postprocess,
    preprocess,
    split_words,
)

LABELS = ["O", "B-neg", "I-neg", "B-pos", "I-pos"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _features(tokenizer, tokens, tags=None, **params):
    batch = {"tokens": tokens, "example_id": list(range(len(tokens)))}
    if tags is not None:
        batch["tags"] = tags
    return preprocess(batch, tokenizer, Params(**params), label_maps(LABELS)[1])


def _one_hot_logits(features, tag_of_word, labels=LABELS) -> np.ndarray:
    """Logits that pick, at each word's first subword, the tag ``tag_of_word(example, word)``."""
    width = max(len(ids) for ids in features["input_ids"])
    logits = np.zeros((len(features["input_ids"]), width, len(labels)), dtype=np.float32)
    for f, (example, index) in enumerate(zip(features["example_id"], features["word_index"], strict=True)):
        for position, word in enumerate(index):
            if word >= 0:
                logits[f, position, labels.index(tag_of_word(example, word))] = 5.0
    return logits


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_backbone_dir)


@pytest.fixture(scope="module")
def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer for Chinese: one token per CJK character, as a Chinese BERT has."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate([*specials, *dict.fromkeys("张三在北京工作李四去上海了")])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )


def test_conll_reader_skips_docstart_and_blank_separators(tmp_path: Path):
    path = _write(
        tmp_path / "a.conll",
        "-DOCSTART- -X- O O\n\ngood\tB-pos\nmovie\tO\n\t\n\nthe plot NN B-neg\nbad\tI-neg\n",
    )
    rows = read_tagged_file(path, "BIO", None)
    assert rows["tokens"] == [["good", "movie"], ["the", "bad"]]
    assert rows["tags"] == [["B-pos", "O"], ["B-neg", "I-neg"]]


def test_bad_tags_and_transitions_reported_together_with_file_line(tmp_path: Path):
    train = _write(tmp_path / "t.conll", "good\tB-pos\nfine\tI-neg\n\nbad\tI-neg\nx\tB_pos\ny\n")
    with pytest.raises(DataError) as err:
        load_tagged_data(DataConfig(train_file=train), "BIO", None, 0)
    message = str(err.value)
    assert f"{train}:6: expected 'token<TAB>tag'" in message
    assert f"{train}:2: 'I-neg' cannot follow 'B-pos'" in message
    assert f"{train}:4: 'I-neg' cannot follow 'O'" in message
    assert f"{train}:5: tag 'B_pos' is not in the BIO scheme" in message


def test_bioes_scheme_forbids_unclosed_entities_and_accepts_valid(tmp_path: Path):
    good = _write(
        tmp_path / "good.jsonl", json.dumps({"tokens": list("abcd"), "tags": ["B-x", "E-x", "S-y", "O"]})
    )
    assert read_tagged_file(good, "BIOES", None)["tags"] == [["B-x", "E-x", "S-y", "O"]]
    bad = _write(
        tmp_path / "bad.jsonl", json.dumps({"tokens": list("abc"), "tags": ["S-x", "B-x", "I-x"]}) + "\n"
    )
    with pytest.raises(DataError, match=r"bad.jsonl:1 token 2: the sentence ends inside an entity"):
        read_tagged_file(bad, "BIOES", None)
    bio = _write(tmp_path / "bio.jsonl", json.dumps({"tokens": list("abc"), "tags": ["B-x", "I-x", "B-z"]}))
    with pytest.raises(DataError, match=r"bio.jsonl:1 token 2: tag 'B-z' is not in labels"):
        read_tagged_file(bio, "BIO", ["O", "B-x", "I-x"])


def test_jsonl_rows_need_equal_length_tokens_and_tags(tmp_path: Path):
    rows = [{"tokens": ["a", "b"], "tags": ["O"]}, {"tokens": "a b", "tags": ["O", "O"]}]
    path = _write(tmp_path / "d.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError) as err:
        read_tagged_file(path, "BIO", None)
    assert "d.jsonl:1: 2 tokens but 1 tags; give one tag per token" in str(err.value)
    assert "d.jsonl:2: expected a non-empty 'tokens' list of non-empty strings" in str(err.value)


@pytest.mark.parametrize("mode", ["first", "all"])
def test_alignment_equals_per_token_reference(tokenizer, mode):
    """The vectorised labels equal a plain loop over ``word_ids()`` (HF's token-classification recipe)."""
    rows = toy_tagged(12, seed=5)
    tokens, tags = [t for t, _ in rows], [g for _, g in rows]
    features = _features(tokenizer, tokens, tags, subword_labels=mode, max_length=64)
    enc = tokenizer(tokens, is_split_into_words=True)
    for i, tag_row in enumerate(tags):
        expected, previous = [], None
        for word in enc.word_ids(i):
            first = word is not None and word != previous
            keep = first if mode == "first" else word is not None
            expected.append(LABELS.index(tag_row[word]) if keep else IGNORE_INDEX)
            previous = word
        assert features["labels"][i] == expected
        assert features["input_ids"][i] == enc["input_ids"][i]


def test_long_sentence_split_into_chunks_not_truncated(tokenizer, caplog):
    words = ("the movie was good and the plot was awful " * 6).split()
    tags = [["B-pos" if w == "good" else "B-neg" if w == "awful" else "O" for w in words]]
    features = _features(tokenizer, [words], tags, max_length=16)
    assert len(features["input_ids"]) > 1
    assert all(len(ids) <= 16 for ids in features["input_ids"])
    covered = sorted(w for index in features["word_index"] for w in index if w >= 0)
    assert covered == list(range(len(words)))  # every word once, at its first subword
    data = datasets.Dataset.from_dict({"tokens": [words, ["good"]], "tags": [tags[0], ["B-pos"]]})
    with caplog.at_level(logging.INFO, logger="tunelab.tasks.spec"):
        tokenize_dataset(TASK, Params(max_length=16), tokenizer, data, LABELS)
    assert "1 of 2 examples are longer than the model takes and were split" in caplog.text


def test_chunked_predictions_stitch_back_to_every_word(tokenizer):
    words = ("good movie and awful plot " * 8).split()
    features = _features(tokenizer, [words], max_length=12)
    gold = ["B-pos" if w == "good" else "B-neg" if w == "awful" else "O" for w in words]
    logits = _one_hot_logits(features, lambda e, w: gold[w])
    out = postprocess(Predicted({"logits": logits}, features, {"tokens": [words]}, LABELS, Params()))
    assert [e["text"] for e in out[0]["entities"]] == [w for w in words if w in ("good", "awful")]


def test_raw_text_entities_have_character_offsets(tokenizer):
    text = "The  movie was superb, truly awful plot."
    words, spans = split_words(text)
    assert [text[s:e] for s, e in spans] == words
    features = preprocess({"text": [text], "example_id": [0]}, tokenizer, Params(), {})
    tag = {"superb": "B-pos", "awful": "B-neg", "plot": "I-neg"}
    logits = _one_hot_logits(features, lambda e, w: tag.get(words[w], "O"))
    entities = postprocess(Predicted({"logits": logits}, features, {"text": [text]}, LABELS, Params()))[0][
        "entities"
    ]
    assert [(e["type"], e["text"], text[e["start"] : e["end"]]) for e in entities] == [
        ("pos", "superb", "superb"),
        ("neg", "awful plot", "awful plot"),
    ]
    assert all(0.9 < e["score"] <= 1.0 for e in entities)


def test_chinese_characters_align_one_tag_per_character(char_tokenizer):
    text = "张三在北京工作"
    words, spans = split_words(text)
    assert words == list(text)
    assert spans == [(i, i + 1) for i in range(len(text))]
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O"]
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    features = preprocess(
        {"tokens": [words], "tags": [tags], "example_id": [0]},
        char_tokenizer,
        Params(),
        label_maps(labels)[1],
    )
    assert features["labels"][0] == [IGNORE_INDEX, *(labels.index(t) for t in tags), IGNORE_INDEX]
    raw = preprocess({"text": [text], "example_id": [0]}, char_tokenizer, Params(), {})
    logits = _one_hot_logits(raw, lambda e, w: tags[w], labels)
    entities = postprocess(Predicted({"logits": logits}, raw, {"text": [text]}, labels, Params()))[0][
        "entities"
    ]
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in entities] == [
        ("PER", "张三", 0, 2),
        ("LOC", "北京", 3, 5),
    ]


def test_metrics_are_seqeval_entity_scores_with_baseline(tokenizer):
    tokens = [["good", "movie", "awful"], ["fine", "plot"]]
    gold = [["B-pos", "O", "B-neg"], ["B-pos", "O"]]
    guess = {(0, 0): "B-pos", (0, 2): "B-pos", (1, 0): "B-pos"}  # one type confusion
    features = _features(tokenizer, tokens, gold)
    logits = _one_hot_logits(features, lambda e, w: guess.get((e, w), "O"))
    examples = {"tokens": tokens, "tags": gold}
    params = Params(baseline_lexicon={"good": "B-pos"})  # tags good as pos, everything else O
    scores = metrics(Predicted({"logits": logits}, features, examples, LABELS, params))
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["per_type"]["pos"]["f1"] == pytest.approx(0.8)
    assert scores["per_type"]["neg"]["support"] == 1
    assert scores["macro_f1"] == pytest.approx(0.4)
    assert scores["token_accuracy"] == pytest.approx(4 / 5)
    assert scores["baseline_precision"] == 1.0
    assert scores["baseline_recall"] == pytest.approx(1 / 3)


def test_frequency_baseline_tags_each_token_with_its_most_frequent_train_tag():
    lexicon = frequency_lexicon([["Paris", "is", "Paris"], ["paris"]], [["B-loc", "O", "B-loc"], ["O"]])
    assert lexicon_tags(lexicon, ["Paris", "PARIS", "is", "unseen"]) == ["B-loc", "B-loc", "O", "O"]


def test_train_eval_predict_round_trip(make_config, tmp_path: Path):
    """Train on toy NER, then eval + predict via the CLI; saved -> loaded predictions are identical."""
    sections = token_classification(tmp_path)
    cfg = make_config(**{**sections, "train": {"num_train_epochs": 8, "lr": 5e-3}})
    config_path = _write(tmp_path / "ner.yaml", json.dumps(cfg.model_dump(mode="json")))
    runner = CliRunner()
    trained = runner.invoke(app, ["train", str(config_path)])
    assert trained.exit_code == 0, trained.output
    best = cfg.train.output_dir / "best"
    report = json.loads((best / "metrics.json").read_text())
    assert report["dev"]["f1"] > 0.3  # a random tagger scores near 0 entity F1
    assert 0 < report["dev"]["baseline_f1"] < 1

    test_file = write_conll(tmp_path / "test.conll", toy_tagged(16, seed=9))
    evaluated = runner.invoke(app, ["eval", str(best), "--data", str(test_file)])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout[evaluated.stdout.index("{") :])["f1"] > 0.3

    texts = ["the movie was good and the plot awful", "great lovely scene"]
    predicted = runner.invoke(app, ["predict", str(best), *(a for t in texts for a in ("--text", t))])
    assert predicted.exit_code == 0, predicted.output
    lines = [json.loads(line) for line in predicted.stdout.splitlines() if line.startswith("{")]
    for line, text in zip(lines, texts, strict=True):
        assert all(text[e["start"] : e["end"]] == e["text"] for e in line["entities"])
    # Same batching as the CLI (one padded batch of both texts): identical outputs, not merely close.
    reloaded = predict_records(load_artifact(best), [{"text": t} for t in texts], batch_size=64)
    assert [{"text": t, **p} for t, p in zip(texts, reloaded, strict=True)] == lines


def test_token_logits_of_different_lengths_gather_the_same_at_any_batch_size(tiny_backbone_dir, tokenizer):
    """Ragged token logits pad to one array; rows match whatever batch they were padded in."""
    from tunelab.inference.predict import predict_outputs
    from tunelab.tasks.spec import OUTPUT_PAD, load_with_labels

    model = load_with_labels(TASK, tiny_backbone_dir, LABELS).eval()
    rows = toy_tagged(7, seed=4)
    data = datasets.Dataset.from_dict({"tokens": [t for t, _ in rows], "tags": [g for _, g in rows]})
    features = tokenize_dataset(TASK, Params(), tokenizer, data, LABELS)
    collate = TASK.collator(tokenizer, Params())
    one, three = (predict_outputs(model, TASK, features, collate, size) for size in (1, 3))
    lengths = [len(ids) for ids in features["input_ids"]]
    assert one.arrays["logits"].shape == (7, max(lengths), len(LABELS))
    for row, n in enumerate(lengths):
        np.testing.assert_allclose(one.arrays["logits"][row, :n], three.arrays["logits"][row, :n], atol=1e-5)
        assert (one.arrays["logits"][row, n:] == OUTPUT_PAD).all()
    assert one.loss == pytest.approx(three.loss, abs=1e-5)
