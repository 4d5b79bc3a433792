"""Tiny learnable data per task, for tests that must cover every registered task (the method contract matrix).

Each entry maps a task name to a builder ``(tmp_dir) -> config sections`` (``data`` and ``task``; the
best-model metric defaults to the task's main one) that work with the ``tiny_backbone_dir`` fixture.
Adding a task to ``tunelab.tasks.TASKS`` means adding its entry here; ``test_every_task_has_toy_data``
fails until it exists.
"""

from __future__ import annotations

import atexit
import csv
import functools
import json
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

Sections = dict[str, Any]


def save_tiny_bert(
    out: Path, vocab_size: int, hidden: int = 32, layers: int = 2, heads: int = 2, intermediate: int = 64
) -> Path:
    """A random-init BERT MLM (default: 2 layers, hidden 32; seed 0) saved into ``out`` by its tokenizer."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=64,
    )
    BertForMaskedLM(config).save_pretrained(out)
    return out


def toy_run_config(
    backbone: Path,
    sections: Sections,
    methods: list[dict[str, Any]],
    output_dir: Path,
    previous_run: Path | None = None,
    **train: Any,
) -> Any:
    """A validated config of the tiny test runs: batch 8, lr 1e-2, one step, seed 7 (``train`` overrides).

    With ``previous_run`` the run continues that run (``model.previous_run``) instead of ``backbone``.
    """
    from tunelab.config import validate_config

    defaults = {"batch_size": 8, "lr": 1e-2, "max_steps": 1, "save_steps": 1000, "seed": 7}
    model = {"name_or_path": str(backbone)} if previous_run is None else {"previous_run": str(previous_run)}
    return validate_config(
        {
            "model": model,
            **sections,
            "methods": methods,
            "train": {"output_dir": str(output_dir), **defaults, **train},
        }
    )


POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "weak"]
FILLER = ["the", "movie", "plot", "actor", "was", "very", "and", "story", "scene", "quite", "a", "it"]


def toy_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Learnable rows: the label is whether a positive or a negative cue word appears."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        cue = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        words = rng.choices(FILLER, k=rng.randint(3, 14))
        words.insert(rng.randrange(len(words) + 1), cue)
        rows.append((" ".join(words), label))
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def classification(tmp: Path) -> Sections:
    """Cue-word sentiment rows in CSV."""
    return {
        "data": {
            "train_file": str(write_csv(tmp / "cls_train.csv", toy_rows(48, seed=2))),
            "dev_file": str(write_csv(tmp / "cls_dev.csv", toy_rows(16, seed=3))),
        },
        "task": {"name": "classification", "params": {"max_length": 32}},
    }


def continual_classification(tmp: Path) -> Sections:
    """Task B of a continual run after :func:`classification`: the cue-word rows under new label names."""
    names = {"positive": "upbeat", "negative": "downbeat"}

    def rows(n: int, seed: int) -> list[tuple[str, str]]:
        return [(text, names[label]) for text, label in toy_rows(n, seed)]

    return {
        "data": {
            "train_file": str(write_csv(tmp / "b_train.csv", rows(48, seed=4))),
            "dev_file": str(write_csv(tmp / "b_dev.csv", rows(16, seed=5))),
        },
        "task": {"name": "classification", "params": {"max_length": 32}},
    }


def save_previous_run(backbone: Path, tmp: Path) -> Path:
    """A run to continue: the untrained toy :func:`classification` model saved as best/ with its record."""
    from tunelab.models.artifact import save_model
    from tunelab.training import prepare_inputs, resolve
    from tunelab.workflows import run_info

    run = tmp / "previous-run"
    plan = resolve(toy_run_config(backbone, classification(tmp), [{"name": "full"}], run))
    inputs = prepare_inputs(plan)
    save_model(inputs.adapted.model, inputs.tokenizer, run / "best", run_info(plan, inputs))
    return run


def continual_run_config(backbone: Path, tmp: Path, methods: list[dict[str, Any]], **train: Any) -> Any:
    """A toy continual run: :func:`continual_classification` after :func:`save_previous_run`'s run."""
    previous = save_previous_run(backbone, tmp)
    return toy_run_config(backbone, continual_classification(tmp), methods, tmp / "run", previous, **train)


def write_lines(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(f"{text}\n" for text in texts), encoding="utf-8")
    return path


def lm_pretrain(tmp: Path) -> Sections:
    """A plain-text corpus of the toy sentences (one per line), masked LM on the tiny BERT."""
    return {
        "data": {
            "train_file": str(write_lines(tmp / "lm_train.txt", [t for t, _ in toy_rows(48, seed=2)])),
            "dev_file": str(write_lines(tmp / "lm_dev.txt", [t for t, _ in toy_rows(16, seed=3)])),
        },
        "task": {"name": "lm_pretrain", "params": {"max_length": 32}},
    }


def toy_tagged(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Learnable tagged sentences: positive cue words are ``pos`` entities, negative ones ``neg``.

    Two cue words of one polarity in a row form one two-word entity (B- then I-).
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens = rng.choices(FILLER, k=rng.randint(3, 10))
        tags = ["O"] * len(tokens)
        for _ in range(rng.randint(1, 2)):
            kind = rng.choice(["pos", "neg"])
            cues = rng.sample(POSITIVE if kind == "pos" else NEGATIVE, k=rng.randint(1, 2))
            at = rng.randrange(len(tokens) + 1)
            if (at > 0 and tags[at - 1] != "O") or (at < len(tags) and tags[at] != "O"):
                continue  # keep entities apart so each span is unambiguous
            tokens[at:at] = cues
            tags[at:at] = [f"B-{kind}"] + [f"I-{kind}"] * (len(cues) - 1)
        rows.append((tokens, tags))
    return rows


def write_conll(path: Path, rows: list[tuple[list[str], list[str]]]) -> Path:
    lines = ["-DOCSTART-\tO", ""]
    for tokens, tags in rows:
        lines += [f"{token}\t{tag}" for token, tag in zip(tokens, tags, strict=True)] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def token_classification(tmp: Path) -> Sections:
    """Cue-word entities: CoNLL train, JSONL dev (both readers)."""
    return {
        "data": {
            "train_file": str(write_conll(tmp / "ner_train.conll", toy_tagged(64, seed=2))),
            "dev_file": str(
                write_jsonl(
                    tmp / "ner_dev.jsonl", [{"tokens": t, "tags": g} for t, g in toy_tagged(16, seed=3)]
                )
            ),
        },
        "task": {"name": "token_classification", "params": {"max_length": 32}},
    }


def toy_qa_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Learnable QA rows: the answer is the one positive cue word of the context; a fifth have none."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.choices(FILLER, k=rng.randint(6, 16))
        answers: dict[str, list[Any]] = {"text": [], "answer_start": []}
        if i % 5:
            cue = rng.choice(POSITIVE)
            words.insert(rng.randrange(len(words) + 1), cue)
            context = " ".join(words)
            start = (" " + context + " ").index(f" {cue} ")
            answers = {"text": [cue], "answer_start": [start]}
        rows.append(
            {
                "id": f"q{seed}-{i}",
                "question": "what was good",
                "context": " ".join(words),
                "answers": answers,
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def qa(tmp: Path) -> Sections:
    """Flat-JSONL extractive QA whose answer is the positive cue word (windows fit the tiny model)."""
    return {
        "data": {
            "train_file": str(write_jsonl(tmp / "qa_train.jsonl", toy_qa_rows(48, seed=2))),
            "dev_file": str(write_jsonl(tmp / "qa_dev.jsonl", toy_qa_rows(16, seed=3))),
        },
        "task": {"name": "qa", "params": {"max_length": 32, "doc_stride": 8, "max_answer_length": 4}},
    }


@functools.cache
def tiny_llama_dir() -> Path:
    """A random-init 2-layer Llama (hidden 32) with the REAL SmolLM2 tokenizer and chat template, saved
    HF-style once per test process (the tokenizer comes from the cached converted SmolLM2 dir)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from tunelab.models.load import resolve_model

    out = Path(tempfile.mkdtemp(prefix="tunelab-tiny-llama-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    tokenizer.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    model.save_pretrained(out)
    return out


def toy_conversations(n: int, seed: int) -> list[dict[str, Any]]:
    """Learnable chat rows in every accepted shape: the reply names the sentence's cue polarity, then
    repeats 0-6 filler words, so responses differ in length (ragged targets)."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i, (text, label) in enumerate(toy_rows(n, seed)):
        reply = " ".join([label, *rng.choices(FILLER, k=rng.randint(0, 6))])
        shape = i % 4
        if shape == 0:
            rows.append({"instruction": "Say the mood of this sentence.", "input": text, "output": reply})
        elif shape == 1:
            rows.append(
                {"conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": reply}]}
            )
        elif shape == 2:
            rows.append({"prompt": text, "completion": reply})
        else:
            turns = [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
            rows.append({"messages": [{"role": "system", "content": "Answer in one word first."}, *turns]})
    return rows


def causal_lm(tmp: Path) -> Sections:
    """Chat rows in all four input shapes on the tiny Llama with the SmolLM2 tokenizer."""
    return {
        "model": {"name_or_path": str(tiny_llama_dir())},
        "data": {
            "train_file": str(write_jsonl(tmp / "sft_train.jsonl", toy_conversations(48, seed=2))),
            "dev_file": str(write_jsonl(tmp / "sft_dev.jsonl", toy_conversations(16, seed=3))),
        },
        "task": {"name": "causal_lm", "params": {"max_length": 96}},
    }


def _scratch_dir(architecture: str) -> Path:
    """A random-init model (1 layer per stack, hidden 32) with a WordPiece tokenizer trained on the toy
    pairs, built by tunelab's own ``from_scratch`` path and saved HF-style once per test process."""
    from tunelab.models.scratch import init_from_scratch
    from tunelab.tasks.lm_pretrain import ScratchParams

    out = Path(tempfile.mkdtemp(prefix=f"tunelab-tiny-{architecture}-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    scratch = ScratchParams(
        architecture=architecture, vocab_size=200, min_frequency=1, hidden_size=32, layers=1, heads=2
    )
    texts = [f"{text} {target}" for text, target in toy_pairs(400, seed=1)]
    import torch

    with torch.random.fork_rng(devices=[]):
        return init_from_scratch(scratch, texts, out / architecture, seed=0)


@functools.cache
def tiny_t5_dir() -> Path:
    """The tiny T5 the seq2seq toy task trains."""
    return _scratch_dir("t5")


@functools.cache
def tiny_bert_dir() -> Path:
    """A tiny BERT whose vocabulary knows the toy targets' words: the encoder a BERT2BERT warm-starts from."""
    return _scratch_dir("bert")


@functools.cache
def tiny_modernbert_dir() -> Path:
    """A tiny ModernBERT MLM (the architecture of tunelab's Chinese pretraining) with a toy WordPiece."""
    return _scratch_dir("modernbert")


def toy_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Learnable source -> target rows: the sentence's polarity (a word no source has), its cue word, then
    its first 0-3 words, so targets differ in length (ragged labels)."""
    rng = random.Random(seed)
    rows = []
    for text, label in toy_rows(n, seed):
        words = text.split()
        cue = next(w for w in words if w in POSITIVE or w in NEGATIVE)
        rows.append((text, " ".join([label, cue, *words[: rng.randint(0, 3)]])))
    return rows


def seq2seq(tmp: Path) -> Sections:
    """Source/target pairs (CSV train, JSONL dev) on the tiny T5 built by tunelab."""
    dev = [{"source": s, "target": t} for s, t in toy_pairs(16, seed=3)]
    return {
        "model": {"name_or_path": str(tiny_t5_dir())},
        "data": {
            "train_file": str(write_csv(tmp / "s2s_train.csv", toy_pairs(48, seed=2), ("source", "target"))),
            "dev_file": str(write_jsonl(tmp / "s2s_dev.jsonl", dev)),
        },
        "task": {"name": "seq2seq", "params": {"max_source_length": 32, "max_target_length": 8}},
    }


def prompt_classification(tmp: Path) -> Sections:
    """Cue-word sentiment rows scored by label words, on a tiny Llama with the SmolLM2 tokenizer.

    One row per label (``shared_prefix: false``) so that every method of the contract matrix trains it;
    the shared-prefix rows and the methods that refuse them are tested in test_prompt_classification.
    """
    return {
        "model": {"name_or_path": str(tiny_llama_dir())},
        "data": {
            "train_file": str(write_csv(tmp / "pc_train.csv", toy_rows(48, seed=2))),
            "dev_file": str(write_csv(tmp / "pc_dev.csv", toy_rows(16, seed=3))),
        },
        "task": {
            "name": "prompt_classification",
            "params": {
                "max_length": 32,
                "verbalizer": {"positive": "good news", "negative": "bad"},
                "shared_prefix": False,
            },
        },
    }


def embedding_classification(tmp: Path) -> Sections:
    """Cue-word sentiment rows as contrastive pairs for the tiny BERT's mean-pooled embeddings."""
    return {
        "data": {
            "train_file": str(write_csv(tmp / "ec_train.csv", toy_rows(24, seed=2))),
            "dev_file": str(write_csv(tmp / "ec_dev.csv", toy_rows(16, seed=3))),
        },
        "task": {
            "name": "embedding_classification",
            "params": {"max_length": 32, "pairs_per_example": 1, "descriptions": {"positive": "good"}},
        },
    }


def toy_retrieval_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Learnable (query, positive) rows: a query's relevant item names its cue word ("a good story"), so
    the 10 distinct positives are shared by many queries (duplicates inside batches)."""
    rows = []
    for text, _ in toy_rows(n, seed):
        cue = next(w for w in text.split() if w in POSITIVE or w in NEGATIVE)
        rows.append({"query": text, "positive": f"a {cue} story"})
    return rows


def retrieval(tmp: Path) -> Sections:
    """Cue-word queries ranked against cue-word items (CSV train, JSONL dev) on the tiny BERT."""
    train = [(r["query"], r["positive"]) for r in toy_retrieval_rows(48, seed=2)]
    return {
        "data": {
            "train_file": str(write_csv(tmp / "ret_train.csv", train, ("query", "positive"))),
            "dev_file": str(write_jsonl(tmp / "ret_dev.jsonl", toy_retrieval_rows(16, seed=3))),
        },
        "task": {"name": "retrieval", "params": {"max_length": 32}},
    }


def write_idx(path: Path, array: Any) -> Path:
    """``array`` (numpy, uint8) as an uncompressed idx file: the format's header, then the bytes."""
    import numpy as np

    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    return path


def toy_images(n: int, seed: int, side: int = 8) -> tuple[Any, Any]:
    """Learnable (n, side, side) uint8 images and labels: 0 is dark, 1 is bright, with pixel noise.

    The noise keeps every image distinct and a masked patch predictable only from the visible ones (their
    brightness); labels alternate, so any split is balanced.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.uint8) % 2
    base = np.where(labels == 0, 50, 190)[:, None, None]
    images = base + rng.integers(-40, 40, size=(n, side, side))
    return images.astype(np.uint8), labels


def write_toy_images(tmp: Path, name: str, n: int, seed: int) -> Path:
    """An idx images file ``<name>-images-idx3-ubyte`` of ``toy_images`` with its labels file beside it."""
    images, labels = toy_images(n, seed)
    write_idx(tmp / f"{name}-labels-idx1-ubyte", labels)
    return write_idx(tmp / f"{name}-images-idx3-ubyte", images)


@functools.cache
def tiny_vit_dir() -> Path:
    """A random-init ViT (8x8 grayscale images, patch 4, hidden 16, 2 layers) with its MIM decoder and
    image processor, built by tunelab's own ``from_scratch`` path once per test process."""
    import torch

    from tunelab.models.scratch import init_vit
    from tunelab.tasks.image_classification import ScratchParams

    out = Path(tempfile.mkdtemp(prefix="tunelab-tiny-vit-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    scratch = ScratchParams(image_size=8, patch_size=4, hidden_size=16, layers=2, heads=2)
    with torch.random.fork_rng(devices=[]):
        return init_vit(scratch, [0.4], [0.3], out / "vit", seed=0)


def image_classification(tmp: Path) -> Sections:
    """Dark vs bright 8x8 images (idx files) on the tiny ViT."""
    return {
        "model": {"name_or_path": str(tiny_vit_dir())},
        "data": {
            "train_file": str(write_toy_images(tmp, "toy-train", 48, seed=2)),
            "dev_file": str(write_toy_images(tmp, "toy-dev", 16, seed=3)),
        },
        "task": {"name": "image_classification", "params": {"labels": ["dark", "bright"]}},
    }


def image_mim(tmp: Path) -> Sections:
    """The toy images without their labels, masked image modelling on the tiny ViT."""
    return {
        "model": {"name_or_path": str(tiny_vit_dir())},
        "data": {
            "train_file": str(write_toy_images(tmp, "mim-train", 48, seed=2)),
            "dev_file": str(write_toy_images(tmp, "mim-dev", 16, seed=3)),
        },
        "task": {"name": "image_mim", "params": {"mask_ratio": 0.5, "patch_size": 4}},
    }


TOY_TASKS: dict[str, Callable[[Path], Sections]] = {
    "causal_lm": causal_lm,
    "classification": classification,
    "lm_pretrain": lm_pretrain,
    "token_classification": token_classification,
    "qa": qa,
    "seq2seq": seq2seq,
    "prompt_classification": prompt_classification,
    "embedding_classification": embedding_classification,
    "retrieval": retrieval,
    "image_classification": image_classification,
    "image_mim": image_mim,
}


# Methods list per registered method for the contract matrix: small sizes for the tiny backbone. A method
# whose default params validate joins the matrix without an entry here.
TOY_METHODS: dict[str, list[dict[str, Any]]] = {
    "freeze": [{"name": "freeze", "params": {"trainable_layers": 1, "layer_lr_decay": 0.8}}],
    "moe": [{"name": "moe", "params": {"n_routed_experts": 4, "granularity": 2}}],
    "lora": [{"name": "lora", "params": {"r": 4, "use_rslora": True}}],
    "adalora": [{"name": "adalora", "params": {"init_r": 4, "target_r": 2, "tinit_ratio": 0.0}}],
    "prefix_tuning": [{"name": "prefix_tuning", "params": {"num_virtual_tokens": 4}}],
    "prompt_tuning": [{"name": "prompt_tuning", "params": {"num_virtual_tokens": 4}}],
    # TEACHER is replaced by a saved model of the same task and labels (the contract test builds one).
    "distill": [{"name": "distill", "params": {"teacher": "TEACHER", "hidden_layers": [[2, 2]]}}],
    # UNLABELED is replaced by the toy task's train file (its labels are ignored); pseudo-labels from step 1.
    "self_train": [
        {"name": "self_train", "params": {"unlabeled_file": "UNLABELED", "warm_start": 0.0, "threshold": 0.0}}
    ],
}


# Methods that continue a previous run (model.previous_run): the contract matrix gives them one,
# save_previous_run's, and trains continual_classification after it.
CONTINUAL_METHODS = ("rehearsal", "ewc")


def toy_methods(name: str) -> list[dict[str, Any]]:
    """The methods list the contract matrix trains for method ``name``."""
    return TOY_METHODS.get(name, [{"name": name}])
