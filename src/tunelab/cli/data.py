"""Shipped assets: list them, write a shipped dataset to files, augment a CSV by back-translation."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from tunelab.cli.common import app, data_app, fail
from tunelab.errors import TunelabError


@data_app.command("prepare")
def data_prepare(name: str, out: Path) -> None:
    """Write shipped dataset NAME into OUT: CSV (text,label), CoNLL (NER), SQuAD JSON (QA) or chat JSONL."""
    try:
        from tunelab.assets import prepare_dataset

        counts = prepare_dataset(name, out)
    except TunelabError as exc:
        fail(exc)
    for filename, n in counts.items():
        typer.echo(f"{out / filename}: {n} rows")


@data_app.command("back-translate")
def data_back_translate(
    src: Path,
    dest: Path,
    forward: Annotated[Path, typer.Option(help="Saved seq2seq model dir: source -> pivot.")],
    backward: Annotated[Path | None, typer.Option(help="Saved seq2seq model dir: pivot -> source.")] = None,
    column: Annotated[str, typer.Option(help="CSV column to paraphrase.")] = "text",
    max_new_tokens: Annotated[int, typer.Option(help="Generation length per stage.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy, else seeded sampling.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
) -> None:
    """Augment a training CSV: its rows plus each row with COLUMN back-translated (same label)."""
    try:
        from tunelab.inference.back_translation import BackTranslator, back_translate_csv

        translator = BackTranslator(forward, backward, max_new_tokens, temperature, seed)
        added = back_translate_csv(src, dest, translator, column)
    except TunelabError as exc:
        fail(exc)
    typer.echo(f"{dest}: {added} back-translated rows added")


@app.command()
def assets() -> None:
    """List shipped models and datasets and whether their packages are installed."""
    from tunelab.assets import DATASETS, MODELS, dataset_dir, package_dir

    def where(locate: Callable[[], Path]) -> str:
        try:
            return str(locate())
        except TunelabError as exc:
            return f"not installed ({exc})"

    for name, model in MODELS.items():
        found = where(partial(package_dir, model.module, model.package))
        typer.echo(f"{'model':8} {name:18} {found}  [{model.license}]")
    for name, dataset in DATASETS.items():
        typer.echo(f"{'dataset':8} {name:18} {where(partial(dataset_dir, dataset))}  [{dataset.license}]")
