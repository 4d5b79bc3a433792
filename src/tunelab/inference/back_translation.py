"""Back-translation: paraphrase texts through saved seq2seq models (source -> pivot -> source).

A callable over a list of texts; ``back_translate_csv`` (CLI ``tunelab data back-translate``) uses it
to pre-augment a training CSV, whose result is plain rows any task reads. It takes any local Hugging
Face seq2seq directory (T5, BART, Marian...); no translation weights ship offline, so the tests drive
it with a tiny random T5. Generation is greedy unless ``temperature`` > 0, then seeded sampling.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tunelab.data.readers import read_table
from tunelab.errors import DataError
from tunelab.inference.generate import generate_tokens
from tunelab.io import atomic_write
from tunelab.models.load import load_seq2seq


class BackTranslator:
    """``texts -> paraphrases``: translate with ``forward_dir``, then back with ``backward_dir``.

    Without ``backward_dir`` the forward model alone maps text to text (e.g. a paraphrase model).
    """

    def __init__(
        self,
        forward_dir: Path,
        backward_dir: Path | None = None,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.stages = [load_seq2seq(forward_dir)] + ([load_seq2seq(backward_dir)] if backward_dir else [])
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed

    @torch.no_grad()
    def _generate(self, model: Any, tokenizer: Any, texts: Sequence[str]) -> list[str]:
        batch = tokenizer(
            list(texts), padding=True, truncation=True, return_tensors="pt", return_token_type_ids=False
        )
        sampling = self.temperature > 0
        ids = generate_tokens(
            model,
            batch,
            max_new_tokens=self.max_new_tokens,
            do_sample=sampling,
            temperature=self.temperature if sampling else None,
        )
        texts_out: list[str] = tokenizer.batch_decode(ids, skip_special_tokens=True)
        return texts_out

    def __call__(self, texts: Sequence[str]) -> list[str]:
        """One paraphrase per text, in order; the same seed gives the same output."""
        torch.manual_seed(self.seed)
        out = list(texts)
        for model, tokenizer in self.stages:
            out = self._generate(model, tokenizer, out)
        return out


def back_translate_csv(
    src: Path, dest: Path, translate: Callable[[Sequence[str]], list[str]], column: str, batch_size: int = 32
) -> int:
    """Write ``src``'s rows, then a copy of each row whose ``column`` is its paraphrase, to ``dest``.

    Paraphrases that come back empty or unchanged are dropped (they add nothing). Every other column
    (the label) is copied as is. Returns the number of paraphrased rows added; ``dest`` is written
    atomically, so a failure leaves no half-augmented file.
    """
    table = read_table(src)  # the readers' file:line errors (bytes not UTF-8, repeated header, ...)
    fields = list(table.columns)
    rows = [{name: table.columns[name][i] for name in fields} for i in range(len(table.lines))]
    if column not in fields:
        raise DataError(f"{src}:1: no column {column!r} to paraphrase (columns: {', '.join(fields)})")
    texts = [row[column] for row in rows]
    paraphrases = [p for i in range(0, len(texts), batch_size) for p in translate(texts[i : i + batch_size])]
    added = [
        {**row, column: new.strip()}
        for row, new in zip(rows, paraphrases, strict=True)
        if new.strip() and new.strip() != row[column].strip()
    ]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows + added)
    atomic_write(dest, out.getvalue())
    return len(added)
