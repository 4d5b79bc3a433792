"""The run configuration: one pydantic tree, loaded from YAML plus ``--key.path value`` overrides.

Task- and method-specific ``params`` stay plain dicts here and are validated against their registry
specs in ``training/plan.py``, because this module sits below ``tasks``/``methods`` and must stay
importable without torch (fast ``tunelab --help``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tunelab.errors import ConfigError, format_validation_error
from tunelab.io import DuplicateKeyError, parse_yaml, read_utf8
from tunelab.overrides import apply_override, parse_overrides


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    """``model:``: where the starting weights come from, and whether their code may run.

    Resolved to a local directory by ``models.load.resolve_model``; hub downloads never happen.
    """

    name_or_path: str | None = Field(
        default=None,
        description=(
            "Shipped model asset name (see `tunelab assets`), a local HF directory, or `scratch` with "
            "task.params.from_scratch (lm_pretrain, seq2seq). Exclusive with previous_run."
        ),
    )
    previous_run: Path | None = Field(
        default=None,
        description=(
            "Continual learning: the run dir of the task learned before (its best/ is the start, its head "
            "grown to its labels + this run's); the report adds its dev/test metrics. Exclusive with "
            "name_or_path."
        ),
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Allow model code from the model directory to run. Off unless you trust it.",
    )

    @model_validator(mode="after")
    def _one_start(self) -> ModelConfig:
        if (self.name_or_path is None) == (self.previous_run is None):
            raise ValueError(
                "give exactly one of name_or_path (a model) and previous_run (a run to continue)"
            )
        return self

    @property
    def start(self) -> str:
        """The model the run starts from: ``name_or_path``, or the previous run's ``best/``."""
        if self.previous_run is not None:
            return str(self.previous_run / "best")
        assert self.name_or_path is not None, "_one_start: name_or_path or previous_run"
        return self.name_or_path


AugmentOp = Literal["swap", "delete", "insert", "synonym"]


def _default_augment_ops() -> list[AugmentOp]:
    return ["swap", "delete", "insert"]


class AugmentConfig(_Section):
    """``data.augment:``: EDA-style text edits applied to training examples as batches are drawn.

    Edits are redrawn every epoch from the run seed, so a run stays reproducible; dev and test rows are
    never augmented. The synonym operation needs a user-supplied ``synonyms_file``.
    """

    ops: list[AugmentOp] = Field(
        default_factory=_default_augment_ops,
        min_length=1,
        description="EDA operations; one is drawn per augmented example.",
    )
    unit: Literal["word", "char", "zh_word"] = Field(
        default="word",
        description="Edit whitespace words, characters, or Chinese words segmented by jieba (zh_word).",
    )
    alpha: float = Field(
        default=0.1,
        gt=0,
        le=0.5,
        description="Fraction of units changed (delete: each unit's drop probability).",
    )
    prob: float = Field(
        default=0.5, ge=0, le=1, description="Probability that a training example is augmented."
    )
    synonyms_file: Path | None = Field(
        default=None, description="word<TAB>syn1,syn2 lines; required by the synonym operation."
    )

    @model_validator(mode="after")
    def _synonyms_needed(self) -> AugmentConfig:
        if "synonym" in self.ops and self.synonyms_file is None:
            raise ValueError("the synonym operation needs synonyms_file (no synonym resource ships offline)")
        return self


class DataConfig(_Section):
    """``data:``: the input files, which columns hold text and label, and how rows are sampled.

    Every subset (``max_*_samples``, ``k_shot``, the dev split of train) is drawn with ``train.seed``,
    so the same config always trains and evaluates on the same rows.
    """

    train_file: Path = Field(description="Training data: .csv, .jsonl/.json or .parquet.")
    dev_file: Path | None = Field(
        default=None,
        description="Dev data for evaluation during training; a stratified split of train if unset.",
    )
    test_file: Path | None = Field(default=None, description="Held-out data evaluated once after training.")
    text_column: str = Field(default="text", description="Column holding the input text.")
    text_pair_column: str | None = Field(
        default=None, description="Optional second text column (sentence pairs)."
    )
    label_column: str = Field(default="label", description="Column holding the label (string or integer).")
    dev_ratio: float = Field(
        default=0.1, gt=0, lt=0.5, description="Fraction of train held out when no dev_file."
    )
    max_train_samples: int | None = Field(
        default=None, gt=0, description="Use a seeded random subset of this many training rows."
    )
    max_eval_samples: int | None = Field(
        default=None, gt=0, description="Use a seeded random subset of this many dev/test rows."
    )
    k_shot: int | None = Field(
        default=None,
        ge=0,
        description="Few-shot: a seeded sample of this many train rows per label; 0: zero-shot, no training.",
    )
    augment: AugmentConfig | None = Field(
        default=None, description="Training-time EDA augmentation, redrawn every epoch; null = off."
    )


class TaskConfig(_Section):
    """``task:``: which task (registry name) the model learns, with its still-unvalidated params.

    ``params`` is checked against the task spec's pydantic model in ``training/plan.py``.
    """

    name: str = Field(default="classification", description="Task name from the task registry.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Task options, validated by the task spec."
    )


class MethodConfig(_Section):
    """One entry of ``methods:``: an adaptation method (registry name) and its unvalidated params.

    ``params`` is checked against the method spec's pydantic model in ``training/plan.py``.
    """

    name: str = Field(description="Adaptation method name from the method registry.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Method options, validated by the method spec."
    )


class DistributedConfig(_Section):
    """``train.distributed:``: how several processes (``tunelab train --nproc``, torchrun) share a run."""

    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        default="ddp",
        description="ddp: a model copy per process; fsdp / deepspeed (ZeRO) shard it (CUDA only).",
    )
    zero_stage: Literal[2, 3] | None = Field(
        default=None, description="DeepSpeed ZeRO stage (2: shard gradients + optimizer, 3: also weights)."
    )
    timeout_s: float = Field(
        default=600, gt=0, description="A collective waiting this long for a peer fails the run, not hangs."
    )

    @model_validator(mode="after")
    def _zero_stage_with_deepspeed(self) -> DistributedConfig:
        if (self.strategy == "deepspeed") != (self.zero_stage is not None):
            raise ValueError("zero_stage (2 or 3) is set exactly when strategy is deepspeed")
        return self


class TrainConfig(_Section):
    """``train:``: the training loop's output, optimizer, schedule, precision, evaluation and saving.

    Invariants: at most one of ``warmup_steps`` / ``warmup_ratio`` is set; ``memory_limit_mb`` only with
    ``auto_batch_size``, which ``training.auto_batch`` resolves into ``batch_size`` and
    ``gradient_accumulation_steps`` before the run records its config. ``metric_for_best_model``
    stays None here and is filled when the run is planned (``training.plan.default_selection_metric``).
    """

    output_dir: Path = Field(
        default=Path("runs/default"), description="Run directory (checkpoints, logs, best/)."
    )
    num_train_epochs: int = Field(default=3, ge=1, description="Passes over the training data.")
    max_steps: int | None = Field(default=None, gt=0, description="Stop after this many optimizer steps.")
    batch_size: int = Field(default=16, gt=0, description="Training examples per device per micro-batch.")
    eval_batch_size: int = Field(default=64, gt=0, description="Examples per device per evaluation batch.")
    lr: float = Field(default=5e-5, gt=0, description="Peak learning rate for AdamW.")
    weight_decay: float = Field(
        default=0.01, ge=0, description="AdamW weight decay (not applied to bias/norm)."
    )
    adam_beta1: float = Field(default=0.9, gt=0, lt=1, description="AdamW beta1.")
    adam_beta2: float = Field(default=0.999, gt=0, lt=1, description="AdamW beta2.")
    adam_epsilon: float = Field(default=1e-8, gt=0, description="AdamW epsilon.")
    lr_scheduler_type: Literal["linear", "cosine", "constant"] = Field(
        default="linear", description="Decay after warmup (transformers.get_scheduler)."
    )
    warmup_steps: int | None = Field(default=None, ge=0, description="Linear warmup steps.")
    warmup_ratio: float | None = Field(
        default=None, ge=0, lt=1, description="Warmup as a fraction of all steps."
    )
    gradient_accumulation_steps: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    auto_batch_size: bool = Field(
        default=False,
        description="Train with the largest micro-batch that fits this device and divides the effective "
        "batch (batch_size x gradient_accumulation_steps), accumulating to keep that batch. CUDA tries "
        "real steps; a CPU holds the memory estimate against train.memory_limit_mb.",
    )
    memory_limit_mb: float | None = Field(
        default=None,
        gt=0,
        description="CPU memory (MiB) per process that auto_batch_size fits a run into (weights, gradients, "
        "AdamW state, one micro-batch's activations); null = the loaded weights + 70% of the memory "
        "available (RAM or cgroup limit) shared among the processes.",
    )
    max_grad_norm: float | None = Field(
        default=1.0, gt=0, description="Clip the global gradient norm; null = off."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="Autocast dtype. auto = bf16 on GPUs that support it, fp16 on other GPUs; on a CPU "
        "bf16 where it has native bf16 (avx512_bf16 / amx_bf16), else fp32.",
    )
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations to save memory.")
    label_smoothing: float = Field(
        default=0.0, ge=0, lt=1, description="Label smoothing ε of the training cross-entropy; 0 = off."
    )
    seed: int = Field(default=42, description="Seeds weights init of new heads, dropout and data order.")
    group_by_length: bool = Field(
        default=True, description="Batch examples of similar length together (less padding, same randomness)."
    )
    eval_steps: int | None = Field(
        default=None, gt=0, description="Evaluate every N steps; null = each epoch."
    )
    save_steps: int = Field(default=500, gt=0, description="Write a resumable checkpoint every N steps.")
    save_total_limit: int = Field(default=2, ge=1, description="Keep only the newest N checkpoints.")
    logging_steps: int = Field(default=10, gt=0, description="Log loss/lr/throughput every N steps.")
    metric_for_best_model: str | None = Field(
        default=None,
        description="Dev metric that selects best/ and drives early stopping; null = the task's main metric, "
        "or macro_f1 when one-label-per-row train labels are skewed (imbalanced or a label under 5 rows).",
    )
    early_stopping_patience: int | None = Field(
        default=None, gt=0, description="Stop after this many evaluations without improvement; null = off."
    )

    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig, description="Several processes: sharding strategy and timeout."
    )

    @model_validator(mode="after")
    def _warmup_exclusive(self) -> TrainConfig:
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("warmup_steps and warmup_ratio are exclusive; set only one")
        return self

    @model_validator(mode="after")
    def _memory_limit_needs_auto(self) -> TrainConfig:
        if self.memory_limit_mb is not None and not self.auto_batch_size:
            raise ValueError("memory_limit_mb is read only by auto_batch_size; set auto_batch_size: true")
        return self


class RunConfig(_Section):
    """The whole run: one YAML file (plus overrides) validated into this frozen tree.

    Unknown keys are errors at every level (``extra="forbid"``) so a typo never silently falls back to
    a default; ``dump_config`` writes it back with every default explicit.
    """

    model: ModelConfig = Field(description="The pretrained model (or scratch architecture) to start from.")
    data: DataConfig = Field(description="Training, dev and test files, their columns and sampling.")
    task: TaskConfig = Field(
        default_factory=TaskConfig, description="What the model learns to do: task name and its params."
    )
    methods: list[MethodConfig] = Field(
        default_factory=lambda: [MethodConfig(name="full")],
        description="Adaptation methods, applied in order.",
    )
    train: TrainConfig = Field(
        default_factory=TrainConfig,
        description="The training loop: output dir, steps, optimizer, evaluation, saving.",
    )


NOT_RUN_CONFIGS = ("_space.yaml", "_app.yaml", "_gate.yaml")
"""Name endings of YAML files that are not run configs: search spaces, app settings, safety gates.

Examples keep them beside the run configs they go with; whatever lists run configs skips them.
"""


def validate_config(raw: dict[str, Any]) -> RunConfig:
    """Validate a raw dict; all problems are reported at once in one ConfigError."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("invalid config:\n" + format_validation_error(exc, RunConfig)) from None


def load_config(path: Path, overrides: list[str] | None = None) -> RunConfig:
    """Read YAML, apply ``--key.path value`` overrides, validate."""
    return validate_config(load_raw(path, overrides))


def load_raw(path: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The config as a plain dict, YAML plus overrides, not yet validated (a search varies it first)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = read_utf8(path, ConfigError)
    try:
        raw = parse_yaml(text) or {}
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}; keep one") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections (model, data, task, train...)"
        )
    for key, value in parse_overrides(overrides or []):
        apply_override(raw, key, value)
    return raw


def dump_config(cfg: RunConfig) -> str:
    """The fully resolved config as YAML (every default made explicit)."""
    # PyYAML ships no stubs; without a stream, safe_dump returns the text.
    return cast(str, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
