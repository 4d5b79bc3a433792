"""Commands that use a saved model: score it, predict with it, export it."""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from tunelab.cli.common import app, fail, logger, setup_logging
from tunelab.errors import TunelabError

COMBINE_HELP = "How several models combine: logits (mean) | probs (mean probability) | vote (majority)."


@app.command("eval")
def eval_command(
    model_dir: Annotated[list[Path], typer.Argument(help="Model dir(s); several are scored as an ensemble.")],
    data: Annotated[Path, typer.Option(help="Labelled file to score, in the task's input format.")],
    text_column: Annotated[str | None, typer.Option(help="Text column (default: the training one).")] = None,
    label_column: Annotated[
        str | None, typer.Option(help="Label column (default: the training one).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    report_dir: Annotated[Path | None, typer.Option(help="Also write metrics.json and plots here.")] = None,
    combine: Annotated[str, typer.Option(help=COMBINE_HELP)] = "logits",
) -> None:
    """Score a saved model (or an ensemble of several) on a labelled file; metrics JSON goes to stdout."""
    setup_logging()
    try:
        from tunelab.workflows import evaluate_file, load_models

        art = load_models(model_dir, combine)
        metrics = evaluate_file(art, data, batch_size, text_column, label_column, report_dir)
    except TunelabError as exc:
        fail(exc)
    typer.echo(json.dumps(metrics, indent=2))


@app.command()
def predict(
    model_dir: Annotated[list[Path], typer.Argument(help="Model dir(s); several predict as an ensemble.")],
    text: Annotated[list[str] | None, typer.Option("--text", help="Text to classify (repeatable).")] = None,
    file: Annotated[
        Path | None, typer.Option(help="Text file (one input a line), .csv/.jsonl/.parquet, or idx images.")
    ] = None,
    text_column: Annotated[str | None, typer.Option(help="Column to read from a table file.")] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Inputs per forward; generating: replies decoded together.")
    ] = 64,
    combine: Annotated[str, typer.Option(help=COMBINE_HELP)] = "logits",
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Generating tasks: reply length cap.")] = 128,
    temperature: Annotated[float, typer.Option(min=0, help="Generating: 0 = greedy, else sample.")] = 0.0,
    top_p: Annotated[float, typer.Option(min=0, max=1, help="Sampling: nucleus mass.")] = 1.0,
    top_k: Annotated[int, typer.Option(min=0, help="Sampling: k likeliest tokens only; 0 = off.")] = 0,
    seed: Annotated[int | None, typer.Option(help="Sampling: seed, for reproducible replies.")] = None,
    stop: Annotated[
        list[str] | None, typer.Option("--stop", help="Generating tasks: end the reply here (repeatable).")
    ] = None,
    stream: Annotated[
        bool, typer.Option(help="Generating tasks: print the reply as it is decoded (text, not JSONL).")
    ] = False,
    image: Annotated[
        list[Path] | None, typer.Option("--image", help="Image tasks: an image file (repeatable).")
    ] = None,
    tokens: Annotated[
        bool,
        typer.Option(
            "--tokens",
            help="Token-level tasks: inputs are pre-split words (a line: words separated by spaces; "
            "--file: CoNLL, or JSONL with a 'tokens' list).",
        ),
    ] = False,
) -> None:
    """Predict with a saved model or an ensemble; inputs from --text, --file or stdin; JSONL to stdout.

    Tasks whose inputs have several fields (e.g. question + context) read them from a table --file.
    Image tasks take image files (--image) or an idx images --file (e.g. Fashion-MNIST's t10k split).
    Token-level tasks take pre-split words with --tokens (words a segmenter made, e.g. Japanese).
    Generating tasks (causal_lm) answer each input as a user message with the model's chat template.
    """
    setup_logging()
    try:
        from tunelab.inference.generate import GenerationOptions
        from tunelab.inference.predict import predict_records
        from tunelab.workflows import load_models
        from tunelab.workflows.predict import prediction_records, shown_record

        art = load_models(model_dir, combine)
        stdin: Iterable[str] = _stdin() if not text else []
        records = prediction_records(art, text or [], file, text_column, stdin, tokens, image or [])
        generation = GenerationOptions(max_new_tokens, temperature, top_p, top_k, tuple(stop or ()), seed)
        if stream and art.task.generation_prompt is None:
            raise TunelabError(f"--stream: task {art.task.name} does not generate text; drop --stream")
        if stream:
            for record in records:  # one reply per line, printed as it is decoded
                predict_records(art, [record], batch_size, generation, lambda _, piece: _write(piece))
                _write("\n")
            return
        start = time.perf_counter()
        predictions = predict_records(art, records, batch_size, generation)
        seconds = time.perf_counter() - start
    except TunelabError as exc:
        fail(exc)
    _log_decode_speed(predictions, seconds)
    for record, prediction in zip(records, predictions, strict=True):
        typer.echo(json.dumps({**shown_record(record), **prediction}, ensure_ascii=False))


@app.command()
def explain(
    model_dir: Annotated[Path, typer.Argument(help="A classification or token_classification model dir.")],
    text: Annotated[str, typer.Option("--text", help="The text whose prediction is explained.")],
    method: Annotated[
        str, typer.Option(help="ig: integrated gradients (signed) | rollout: attention rollout (cheap).")
    ] = "ig",
    target: Annotated[
        str | None, typer.Option(help="Explain this label instead of the predicted one.")
    ] = None,
    token: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Token-level tasks: explain the tag of this word (0-based index into the text's words); "
            "default: each predicted entity's first word.",
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=2, max=512, help="ig: interpolation steps (default 32).")
    ] = None,
    html: Annotated[Path | None, typer.Option(help="Also write the coloured text as an HTML page.")] = None,
    png: Annotated[Path | None, typer.Option(help="Also write a bar chart of word scores as a PNG.")] = None,
) -> None:
    """Explain a prediction: per-word attributions of the predicted label (JSON to stdout).

    A word's ig score is its share of the change in the label's probability from an all-padding input
    (positive: the word raises it); word pieces are summed into words.
    """
    setup_logging()
    try:
        from tunelab.workflows.predict import explain_text

        options = {"method": method, "target": target, "word": token, **({"steps": steps} if steps else {})}
        result = explain_text(model_dir, text, options, html, png)
    except TunelabError as exc:
        fail(exc)
    typer.echo(json.dumps(result, ensure_ascii=False))


def _log_decode_speed(predictions: list[dict[str, Any]], seconds: float) -> None:
    """One stderr line with the generated tokens per second, when the predictions generated text."""
    tokens = sum(p.get("completion_tokens", 0) for p in predictions)
    if tokens and seconds > 0:
        logger.info("generated %d tokens in %.1f s: %.1f tokens/s", tokens, seconds, tokens / seconds)


def _stdin() -> TextIO:
    """Standard input as UTF-8, keeping a bad byte (as a lone surrogate) for a ``<stdin>:line`` error."""
    return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@app.command("export")
def export_command(
    model_dir: Path,
    to: Annotated[Path, typer.Option("--to", help="Output directory (HF layout, written atomically).")],
    merge: Annotated[bool, typer.Option(help="Merge a LoRA/adapter artifact into its base model.")] = False,
    dtype: Annotated[str, typer.Option(help="Merged weights: float32 | float16 | bfloat16.")] = "float32",
    quantize: Annotated[str | None, typer.Option(help="int8: dynamic int8 Linear layers.")] = None,
    prune: Annotated[
        str | None, typer.Option(help="magnitude (global unstructured) | neurons (FFN, structured).")
    ] = None,
    prune_amount: Annotated[float, typer.Option(help="Fraction of weights / FFN neurons to remove.")] = 0.3,
    recovery_steps: Annotated[int, typer.Option(help="Fine-tune steps after pruning.")] = 100,
    recovery_lr: Annotated[float | None, typer.Option(help="Recovery LR (default: the run's).")] = None,
    onnx: Annotated[bool, typer.Option(help="Also write model.onnx (onnxruntime parity-checked).")] = False,
    eval_data: Annotated[
        Path | None, typer.Option(help="Labelled file for the parity report (default: the run's dev split).")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="Torch/ORT threads for the latency figures.")] = 2,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --to directory.")] = False,
) -> None:
    """Export MODEL_DIR: merge / prune + recover / int8 / ONNX, with a parity report and a model card."""
    setup_logging()
    try:
        from rich.console import Console

        from tunelab.export.parity import parity_table
        from tunelab.export.pipeline import ExportOptions, export_model

        opts = ExportOptions(
            merge=merge,
            dtype=dtype,
            quantize=quantize,
            prune=prune,
            prune_amount=prune_amount,
            recovery_steps=recovery_steps,
            recovery_lr=recovery_lr,
            onnx=onnx,
            eval_data=eval_data,
            threads=threads,
            overwrite=overwrite,
        )
        record = export_model(model_dir, to, opts)
    except TunelabError as exc:
        fail(exc)
    Console(stderr=True).print(parity_table(record.parity))
    typer.echo(json.dumps({"output": str(to), "steps": record.steps, "parity": record.parity}, indent=2))
