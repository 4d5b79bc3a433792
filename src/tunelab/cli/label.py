"""``tunelab label``: model-assisted annotation; ``suggest`` picks the pool rows to label next."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tunelab.cli.common import app, fail, logger, setup_logging
from tunelab.errors import TunelabError

label_app = typer.Typer(no_args_is_help=True, help="Model-assisted annotation (active learning).")
app.add_typer(label_app, name="label")
STRATEGY_HELP = (
    "entropy (most uncertain distribution) | margin (closest top two labels) | coreset (farthest from "
    "the labelled rows in the model's embedding space)."
)
SHOWN_CHARS = 80  # text shown per row in the terminal table


@label_app.command("suggest")
def label_suggest(
    run: Annotated[Path, typer.Argument(help="A trained classification run (or its best/ model dir).")],
    pool: Annotated[
        Path, typer.Option(help="Unlabelled rows, in the run's training columns (CSV/JSONL/Parquet).")
    ],
    k: Annotated[int, typer.Option("--k", min=1, help="Rows to suggest.")] = 20,
    strategy: Annotated[str, typer.Option(help=STRATEGY_HELP)] = "entropy",
    out: Annotated[
        Path | None, typer.Option(help="Write the rows here (.csv or .jsonl); default: a table.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Inputs per forward.")] = 64,
) -> None:
    """Rank the pool rows RUN would learn most from; each keeps its columns plus score and predicted_label.

    Rows the run trained on are left out. Label the suggested rows (predicted_label is the model's
    guess, to confirm or fix), add them to the training file and train again.
    """
    setup_logging()
    try:
        from tunelab.evaluation.suggest import check_out, suggest, write_suggestions
        from tunelab.inference.artifact import load_artifact

        check_out(out)
        art = load_artifact(run)
        rows = suggest(art, pool, k, strategy, batch_size)
        if out is not None:
            write_suggestions(rows, out)
    except TunelabError as exc:
        fail(exc)
    if out is not None:
        logger.info("%d suggested rows in %s", len(rows), out)
        return
    _print_table(rows, art.columns.text)


def _print_table(rows: list[dict[str, Any]], text_column: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from tunelab.evaluation.suggest import PREDICTED, SCORE

    table = Table("rank", SCORE, PREDICTED, text_column)
    for rank, row in enumerate(rows, start=1):
        text = str(row[text_column])
        shown = text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"
        table.add_row(str(rank), f"{row[SCORE]:.4f}", str(row[PREDICTED]), shown)
    Console().print(table)
