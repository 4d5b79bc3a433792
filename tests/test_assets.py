"""Shipped assets: datasets become clean, deduplicated, stratified splits; GGUF models convert once."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from tunelab.assets import prepare_dataset
from tunelab.models.load import resolve_model


def test_bbc_news_is_deduplicated_and_split_stratified(tmp_path: Path):
    counts = prepare_dataset("bbc-news", tmp_path / "bbc")
    rows = {}
    for split in ("train", "test"):
        with open(tmp_path / "bbc" / f"{split}.csv", encoding="utf-8", newline="") as fh:
            rows[split] = [(r["text"], r["label"]) for r in csv.DictReader(fh)]
    assert counts == {"train.csv": len(rows["train"]), "test.csv": len(rows["test"])}
    texts = [text for split in rows.values() for text, _ in split]
    assert len(texts) == len(set(texts)) == 2125  # 2,225 articles minus 100 duplicates
    labels = {split: Counter(label for _, label in r) for split, r in rows.items()}
    assert set(labels["train"]) == {"business", "entertainment", "politics", "sports", "tech"}
    for label, n in labels["test"].items():
        assert abs(n / len(rows["test"]) - labels["train"][label] / len(rows["train"])) < 0.01
    assert "research use" in (tmp_path / "bbc" / "SOURCE.txt").read_text()


def test_peoples_daily_words_join_compounds_and_surname_given_name_pairs():
    from tunelab.assets.chinese import _char_bio, _pd_words

    words = _pd_words("[中国/ns 政府/n]nt  江/nr  泽民/nr  李/nr  鹏/nr  克林顿/nr  访问/v  北京/ns")
    assert words == [("中国政府", "ORG"), ("江泽民", "PER"), ("李鹏", "PER"), ("克林顿", "PER"),
                     ("访问", ""), ("北京", "LOC")]  # fmt: skip
    tags = [tag for _, tag in _char_bio(words)]
    assert tags[:7] == ["B-ORG", "I-ORG", "I-ORG", "I-ORG", "B-PER", "I-PER", "I-PER"]
    assert tags[-4:] == ["O", "O", "B-LOC", "I-LOC"]


def _conll_sentences(path: Path) -> list[str]:
    blocks = path.read_text(encoding="utf-8").split("\n\n")
    return ["".join(line.split("\t")[0] for line in block.splitlines()) for block in blocks if block.strip()]


def test_peoples_daily_splits_are_disjoint_and_views_agree(tmp_path: Path):
    counts = prepare_dataset("peoples-daily-1998", tmp_path / "pd")
    assert sum(counts[f"{s}.conll"] for s in ("train", "dev", "test")) == 19484
    for split in ("train", "dev", "test"):
        plain = (tmp_path / "pd" / f"{split}.txt").read_text(encoding="utf-8").splitlines()
        assert _conll_sentences(tmp_path / "pd" / f"{split}.conll") == plain
    tags = Counter(
        line.split("\t")[1] for line in (tmp_path / "pd" / "test.conll").read_text().splitlines() if line
    )
    assert set(tags) == {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"}


def test_chinese_sentiment_is_deduplicated_without_ambiguous_texts(tmp_path: Path):
    prepare_dataset("chnsenticorp-like", tmp_path / "zh")
    rows = {}
    for split in ("train", "dev", "test"):
        with open(tmp_path / "zh" / f"{split}.csv", encoding="utf-8", newline="") as fh:
            rows[split] = [(r["text"], r["label"]) for r in csv.DictReader(fh)]
    texts = [text for split in rows.values() for text, _ in split]
    assert len(texts) == len(set(texts)) == 17361  # 35,124 lines, about half duplicates, 47 in both classes
    assert {label for _, label in rows["test"]} == {"negative", "positive"}


def test_chinese_corpus_holds_no_test_text(tmp_path: Path):
    prepare_dataset("zh-corpus", tmp_path / "corpus")
    prepare_dataset("peoples-daily-1998", tmp_path / "pd")
    corpus = set((tmp_path / "corpus" / "train.txt").read_text(encoding="utf-8").splitlines())
    corpus |= set((tmp_path / "corpus" / "dev.txt").read_text(encoding="utf-8").splitlines())
    seen = {
        line for s in ("train", "dev") for line in (tmp_path / "pd" / f"{s}.txt").read_text().splitlines()
    }
    test = set((tmp_path / "pd" / "test.txt").read_text(encoding="utf-8").splitlines())
    assert corpus & test == seen & test  # only headlines that repeat in train/dev, e.g. '图片：'
    assert len(corpus) > 30000


def _intent_splits(out: Path) -> dict[str, list[tuple[str, str]]]:
    """(text, label) rows of a prepared intent set's train.csv and test.csv."""
    splits = {}
    for split in ("train", "test"):
        with open(out / f"{split}.csv", encoding="utf-8", newline="") as fh:
            splits[split] = [(row["text"], row["label"]) for row in csv.DictReader(fh)]
    return splits


def test_chatterbot_intents_are_unique_openers_with_one_category(tmp_path: Path):
    counts = prepare_dataset("chatterbot", tmp_path / "cb")
    assert counts == {"train.csv": 594, "test.csv": 149}
    splits = _intent_splits(tmp_path / "cb")
    texts = [text for rows in splits.values() for text, _ in rows]
    assert len(set(texts)) == len(texts) == 743
    train_labels = Counter(label for _, label in splits["train"])
    assert len(train_labels) == 19
    assert {"health", "humor"}.isdisjoint(train_labels)  # under 5 openers
    assert "Hello" not in texts  # opens both greetings and conversations
    assert train_labels["trivia"] > 40 * train_labels["gossip"]


def test_chatterbot_zh_intents_are_chinese_openers_with_one_category(tmp_path: Path):
    counts = prepare_dataset("chatterbot-zh", tmp_path / "zh")
    assert counts == {"train.csv": 288, "test.csv": 73}
    splits = _intent_splits(tmp_path / "zh")
    texts = [text for rows in splits.values() for text, _ in rows]
    assert len(set(texts)) == len(texts) == 361
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in text) for text in texts)  # the Chinese files
    train_labels, test_labels = (Counter(label for _, label in splits[s]) for s in ("train", "test"))
    assert set(train_labels) == set(test_labels)  # stratified: every category in both splits
    assert len(train_labels) == 16
    assert "gossip" not in train_labels  # 4 openers
    assert "你好" not in texts  # opens both greetings and conversations


@pytest.mark.slow
def test_gguf_model_is_converted_once_into_a_plain_hf_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path))
    path = resolve_model("smollm2-135m-instruct")
    assert path == tmp_path / "models" / "smollm2-135m-instruct"
    assert {"model.safetensors", "chat_template.jinja", "generation_config.json"} <= {
        p.name for p in path.iterdir()
    }
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("smollm2-135m-instruct") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # cached, not converted again
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert getattr(model.config, "quantization_config", None) is None
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1] :])


def test_chatterbot_qa_is_deduplicated_and_split_by_question(tmp_path: Path):
    from tunelab.data.conversations import load_conversation_file

    counts = prepare_dataset("chatterbot-qa", tmp_path / "qa")
    splits = {
        name: load_conversation_file(tmp_path / "qa" / f"{name}.jsonl")["messages"]
        for name in ("train", "dev")
    }
    assert counts == {"train.jsonl": len(splits["train"]), "dev.jsonl": len(splits["dev"])}
    rows = [str(m) for split in splits.values() for m in split]
    assert len(rows) == len(set(rows)) == 898  # 2,025 usable dialogues, over half exact repeats
    openers = {name: {m[0]["content"] for m in split} for name, split in splits.items()}
    assert not openers["train"] & openers["dev"]
    assert all(m[-1]["role"] == "assistant" for split in splits.values() for m in split)


def test_tunelab_instruct_splits_every_category(tmp_path: Path):
    import json

    from tunelab.data.conversations import load_conversation_file

    counts = prepare_dataset("tunelab-instruct", tmp_path / "ti")
    assert counts == {"train.jsonl": 163, "dev.jsonl": 29}
    assert len(load_conversation_file(tmp_path / "ti" / "dev.jsonl")) == 29  # valid Alpaca rows
    source = Path(__file__).parents[1] / "src/tunelab/asset_data/tunelab_instruct/instructions.jsonl"
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    dev = set((tmp_path / "ti" / "dev.jsonl").read_text().splitlines())
    dev_categories = {
        r["category"]
        for r in rows
        if json.dumps({k: r[k] for k in ("instruction", "input", "output")}, ensure_ascii=False) in dev
    }
    assert dev_categories == {"rewrite", "summarise", "classify", "fact", "arithmetic"}
    assert "CC BY 4.0" in (tmp_path / "ti" / "SOURCE.txt").read_text()
