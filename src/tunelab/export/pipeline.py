"""``tunelab export``: load a run's model, merge / prune+recover / quantize / ONNX, measure, write atomically.

Order is fixed (merge, then prune + recovery, then int8, then ONNX) because each step needs the
previous one's output: pruning and recovery train fp32 weights, and dynamic int8 modules can be
neither trained nor exported to ONNX. The source model is measured before any step mutates it; the
result is measured from the files in the temp dir, so the reported size is what lands on disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from tunelab.config import RunConfig
from tunelab.data import TaskData
from tunelab.errors import CheckpointError, ExportError
from tunelab.export import merge, model_card, prune
from tunelab.export.parity import (
    EvalSplit,
    Measurement,
    latency_batch,
    measure,
    parity_markdown,
    parity_report,
    scored_metrics,
)
from tunelab.inference.artifact import Artifact, load_artifact
from tunelab.io import atomic_dir
from tunelab.models import int8
from tunelab.models.adapter import is_adapter_dir
from tunelab.models.run_info import ExportInfo, weight_files, write_run_info
from tunelab.tasks.spec import tokenize_dataset
from tunelab.training import TrainInputs
from tunelab.training.setup import task_adapted

if TYPE_CHECKING:
    from tunelab.models.protocols import SavesPretrained

logger = logging.getLogger(__name__)

PROBE_ROWS = 4
RELOAD_ATOL = 1e-5  # the written model is read back exactly; only summation order may differ


@dataclass(frozen=True)
class ExportOptions:
    """What ``tunelab export`` was asked to do (CLI flags, one field each).

    Values arrive unchecked from the command line, hence plain ``str``: ``check_options`` refuses any
    outside the choices noted below, listing every problem at once.
    """

    merge: bool = False
    dtype: str = "float32"  # float32 | float16 | bfloat16 (merge.DTYPES)
    quantize: str | None = None  # int8
    prune: str | None = None  # magnitude | neurons (prune.PRUNE_METHODS)
    prune_amount: float = 0.3
    recovery_steps: int = 100
    recovery_lr: float | None = None
    onnx: bool = False
    eval_data: Path | None = None
    threads: int = 2
    latency_repeats: int = 10
    overwrite: bool = False


def check_options(opts: ExportOptions, dest: Path) -> None:
    """Refuse impossible combinations before any weight loads; one message naming every problem."""
    problems = []
    for flag, value, choices in (
        ("--dtype", opts.dtype, tuple(merge.DTYPES)),
        ("--quantize", opts.quantize, (None, "int8")),
        ("--prune", opts.prune, (None, *prune.PRUNE_METHODS)),
    ):
        if value not in choices:
            problems.append(
                f"{flag}: {value!r} is not supported; choose one of: {', '.join(c for c in choices if c)}"
            )
    if dest.exists() and not opts.overwrite:
        problems.append(f"--to {dest}: already exists; pass --overwrite to replace it")
    if opts.dtype != "float32" and not opts.merge:
        problems.append("--dtype: only applies to --merge (the precision of the merged weights)")
    if opts.dtype != "float32" and (opts.prune or opts.quantize or opts.onnx):
        problems.append("--dtype: prune, int8 and ONNX work from float32 weights; merge in float32")
    if opts.quantize and opts.onnx:
        problems.append(
            "--quantize int8 with --onnx: torch dynamic-int8 modules cannot be exported to ONNX; "
            "export ONNX from the float model and quantize with onnxruntime's tools"
        )
    if not 0.0 < opts.prune_amount < 1.0:
        problems.append(f"--prune-amount: must be between 0 and 1 (got {opts.prune_amount})")
    if opts.recovery_steps < 1:
        problems.append(f"--recovery-steps: must be at least 1 (got {opts.recovery_steps})")
    if problems:
        raise ExportError("export refused:\n" + "\n".join(problems))


def run_config(art: Artifact) -> RunConfig:
    """The training config recorded with the model; a plain HF directory has none."""
    if art.info.config is None:
        raise CheckpointError(
            f"{art.path}: no training config recorded (not a tunelab run); pass --eval-data FILE, "
            "and pruning needs a tunelab run"
        )
    return art.info.config


def run_splits(art: Artifact) -> TaskData:
    """The run's train/dev splits rebuilt from its recorded config exactly as training built them."""
    cfg = run_config(art)
    data: TaskData = art.task.load_data(cfg.data, art.task_params, cfg.train.seed)
    if data.labels != art.labels:
        raise CheckpointError(
            f"{cfg.data.train_file}: labels {data.labels} differ from the model's {art.labels}; "
            "the training data changed since the run"
        )
    return data


def _features(art: Artifact, rows: Any) -> Any:
    return tokenize_dataset(art.task, art.task_params, art.tokenizer, rows, art.labels)


def _prune_and_recover(
    model: torch.nn.Module,
    art: Artifact,
    opts: ExportOptions,
    data: TaskData,
    score: Callable[[torch.nn.Module], dict[str, float]],
) -> dict[str, Any]:
    """Prune, score (to show what recovery buys), recover on the run's train split, make permanent."""
    params_before = sum(p.numel() for p in model.parameters())
    head = art.task.head_modules
    record: dict[str, Any] = {"method": opts.prune, "amount": opts.prune_amount}
    if opts.prune == "magnitude":
        prune.magnitude_prune(model, opts.prune_amount, head)
    else:
        record["intermediate_size"] = prune.prune_ffn_neurons(model, opts.prune_amount)
    record["dev_before_recovery"] = score(model)
    cfg = run_config(art)
    inputs = TrainInputs(
        adapted=task_adapted(art.task, art.task_params, model),
        tokenizer=art.tokenizer,
        collator=art.task.collator(art.tokenizer, art.task_params),
        labels=art.labels,
        train=_features(art, data.train),
        dev=_features(art, data.dev),
        test=None,
        examples={"dev": data.dev},
        task_params=art.task_params,
    )
    losses = prune.recover(
        model, cfg, opts.recovery_steps, opts.recovery_lr, art.task, art.task_params, inputs
    )
    prune.make_permanent(model)
    return {
        **record,
        "linear_sparsity": prune.linear_sparsity(model, head),
        "parameters": {"before": params_before, "after": sum(p.numel() for p in model.parameters())},
        "recovery": {"steps": opts.recovery_steps, "lr": opts.recovery_lr or cfg.train.lr, "losses": losses},
    }


@torch.no_grad()
def check_reload(model: torch.nn.Module, written: Path, probe: dict[str, torch.Tensor]) -> None:
    """Refuse an export that loads back (as predict, eval and serve load it) unlike the model measured.

    The exported model is compared in fp32 (the precision every loader gives), so a half-precision merge
    is held to its own weights, not to the fp32 adapter. Called last: it upcasts ``model`` in place.
    """
    model = model.float().eval()
    want = merge.output_tensors(model(**probe))
    got = merge.output_tensors(load_artifact(written).model(**probe))
    diff = max(float((got[name] - value).abs().max()) for name, value in want.items())
    if not diff <= RELOAD_ATOL:
        raise ExportError(
            f"{written}: the written model reloads with outputs {diff:.3g} away from the exported one "
            f"(tolerance {RELOAD_ATOL:g}); nothing written. This is a tunelab bug: please report it"
        )


def export_model(source: Path, dest: Path, opts: ExportOptions) -> ExportInfo:
    """Run the requested export steps on the model at ``source`` and write it to ``dest`` atomically.

    Returns the ``export`` record written into ``tunelab_run.json`` (steps, per-step details, parity).
    """
    check_options(opts, dest)
    torch.set_num_threads(opts.threads)
    art = load_artifact(source)
    if opts.merge and not is_adapter_dir(art.path):
        raise ExportError(
            f"--merge: {art.path} has no adapter to merge (no adapter_config.json); it is already a full "
            "model, so export it without --merge"
        )
    if is_adapter_dir(art.path) and not opts.merge:
        raise ExportError(f"{art.path}: an adapter artifact; export it with --merge to get a full model")
    source_export = art.info.export
    if source_export is not None and source_export.quantized and (opts.quantize is None or opts.prune):
        # Its dynamic int8 layers hold packed weights: save_pretrained and pruning cannot handle them.
        raise ExportError(
            f"{art.path}: already an int8 export, which can only be re-quantized (--quantize int8, no "
            f"--prune); export the float model it came from instead ({source_export.source})"
        )
    needs_run_data = opts.prune is not None or opts.eval_data is None
    data = run_splits(art) if needs_run_data else None
    if opts.eval_data is not None:
        examples = art.task.read_eval(opts.eval_data, art.columns, art.task_params, art.labels)
    else:
        assert data is not None, "without --eval-data the run's splits are loaded"
        examples = data.dev
    dev = EvalSplit(_features(art, examples), examples, art.task_params, art.tokenizer)
    collator = art.task.collator(art.tokenizer, art.task_params)
    probe = latency_batch(dev.features, collator, PROBE_ROWS, art.task)  # >= 2 rows: no fixed batch axis

    def measured(model: torch.nn.Module, files: list[Path]) -> Measurement:
        return measure(model, art.task, dev, collator, art.labels, files, opts.latency_repeats)

    def score(model: torch.nn.Module) -> dict[str, float]:
        return scored_metrics(model, art.task, dev, collator, art.labels)

    before = measured(art.model, weight_files(art.path))
    model, steps, record = art.model, [], {}
    if opts.merge:
        model, diff = merge.merge_verified(model, probe, opts.dtype)
        steps.append("merged")
        base_model = art.info.adapter.base_model if art.info.adapter is not None else None
        record["merged"] = {"dtype": opts.dtype, "max_logit_diff": diff, "base_model": base_model}
    if opts.prune is not None:
        assert data is not None, "pruning loads the run's splits"
        record["pruned"] = _prune_and_recover(model, art, opts, data, score)
        steps.append(f"pruned-{opts.prune}+recovered")
    if opts.quantize == "int8":
        model = int8.quantize_int8(model, keep=art.task.head_modules)
        steps.append("int8")
        record["quantized"] = {"method": int8.METHOD, "weights_file": int8.WEIGHTS_FILE}

    with atomic_dir(dest) as tmp:
        if opts.quantize == "int8":
            int8.save_int8(model, tmp)
        else:
            cast("SavesPretrained", model).save_pretrained(tmp, safe_serialization=True)
        art.tokenizer.save_pretrained(tmp)
        files = weight_files(tmp)
        evaluated = model
        if opts.onnx:
            from tunelab.export import onnx as onnx_export

            path = onnx_export.export_onnx(model, probe, tmp)
            session = onnx_export.ort_session(path, opts.threads)
            single = {k: v[:1] for k, v in probe.items()}  # a different batch size than the trace
            diff = max(onnx_export.check_onnx_parity(model, session, p) for p in (probe, single))
            steps.append("onnx")
            record["onnx"] = {"file": onnx_export.ONNX_FILE, "max_logit_diff": diff, "runtime": "onnxruntime"}
            evaluated, files = onnx_export.OrtClassifier(session), [path]
        after = measured(evaluated, files)
        report = parity_report(before, after, art.task.metric_names[0])
        export = ExportInfo(source=str(art.path), steps=steps, **record, parity=report)
        info = art.info.model_copy(update={"adapter": None, "dev_metrics": after.metrics, "export": export})
        write_run_info(tmp, info)
        check_reload(model, tmp, probe)
        card = model_card.render_model_card(info, parity_markdown(report))
        (tmp / "README.md").write_text(card, encoding="utf-8")
    logger.info("exported %s -> %s (%s)", art.path, dest, ", ".join(steps) or "plain copy")
    return export
