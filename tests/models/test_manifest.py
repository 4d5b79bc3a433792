"""The input hashes a run records: equal for equal content, different when any of it changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
from transformers import AutoTokenizer

from tunelab.models.manifest import chat_template_sha256, features_sha256, tokenizer_sha256


def test_features_fingerprint_follows_the_values_not_the_object():
    rows = {"input_ids": [[2, 5, 3], [2, 7, 3]], "labels": [0, 1]}
    same = features_sha256(datasets.Dataset.from_dict(rows))
    assert features_sha256(datasets.Dataset.from_dict(dict(rows))) == same
    assert features_sha256(datasets.Dataset.from_dict({**rows, "labels": [1, 1]})) != same
    assert features_sha256(datasets.Dataset.from_dict({**rows, "input_ids": [[2, 5, 3], [2, 8, 3]]})) != same


def test_tokenizer_and_chat_template_hashes_follow_their_files(tiny_backbone_dir: Path, tmp_path: Path):
    copy = Path(shutil.copytree(tiny_backbone_dir, tmp_path / "tok"))
    original = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    assert tokenizer_sha256(AutoTokenizer.from_pretrained(copy)) == tokenizer_sha256(original)
    assert chat_template_sha256(original) is None
    (copy / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    templated = AutoTokenizer.from_pretrained(copy)
    assert tokenizer_sha256(templated) != tokenizer_sha256(original)
    assert chat_template_sha256(templated) is not None
    (copy / "chat_template.jinja").write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    assert chat_template_sha256(AutoTokenizer.from_pretrained(copy)) != chat_template_sha256(templated)
