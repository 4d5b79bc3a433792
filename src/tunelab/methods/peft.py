"""Parameter-efficient fine-tuning through the ``peft`` library: params -> peft config -> ``get_peft_model``.

LoRA (Hu et al. 2021; rsLoRA, Kalajdzievski 2023; DoRA, Liu et al. 2024), AdaLoRA (Zhang et al. 2023),
IA3 (Liu et al. 2022), prefix tuning (Li & Liang 2021) and prompt tuning (Lester et al. 2021). Nothing is
re-implemented: what tunelab adds is the task wiring (peft's task type from the task's model class; the
task head and pooler trained and saved in ``modules_to_save``, so an adapter reloads with identical
predictions), AdaLoRA's per-step budget update after each optimizer step with the plan's step count, and
refusals at validation for what peft cannot do with our transformers:

- prefix tuning needs a backbone whose forward takes ``past_key_values``; transformers 5 encoders and
  classification heads no longer list it, so peft refuses them; it runs on causal/seq2seq LM tasks.
- prompt tuning prepends virtual tokens to the outputs too: only sequence classification and causal LM
  tasks, whose heads do not read per-token positions, are served.
- bottleneck adapters (Houlsby/Pfeiffer) are not offered: peft has none, and the ``adapters`` package
  (1.3.0) pins ``transformers~=4.57.6``, incompatible with the transformers 5 we run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast

import torch
from peft import (
    AdaLoraConfig,
    IA3Config,
    LoraConfig,
    PeftConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    TaskType,
    get_peft_model,
)
from peft.utils.constants import (
    TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
)
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from transformers.pytorch_utils import Conv1D

from tunelab.config import RunConfig
from tunelab.errors import ConfigError
from tunelab.methods.spec import (
    Adapted,
    MethodSpec,
    OptimizerStepContext,
    Target,
    refuses_block_mask,
    refuses_previous_run,
)
from tunelab.models.adapter import peft_wrapping

# transformers head class suffix -> peft task type (peft wraps forward and saving per task type).
TASK_TYPES: dict[str, TaskType | None] = {
    "ForSequenceClassification": TaskType.SEQ_CLS,
    "ForTokenClassification": TaskType.TOKEN_CLS,
    # QA: none. peft's QUESTION_ANS wrapper drops token_type_ids under LoRA (peft 0.21), so a BERT
    # would train on zeroed segment ids and differ from its merged copy; the plain wrapper passes
    # every input through, and the head is in modules_to_save either way.
    "ForQuestionAnswering": None,
    "ForCausalLM": TaskType.CAUSAL_LM,
    "ForSeq2SeqLM": TaskType.SEQ_2_SEQ_LM,
    "ForConditionalGeneration": TaskType.SEQ_2_SEQ_LM,  # T5, BART, Pegasus: the concrete seq2seq classes
}
# Modules feeding the head that a backbone checkpoint may lack (then freshly initialised at load).
HEAD_FEEDERS = ("pooler",)


def task_type(class_name: str) -> TaskType | None:
    """The peft task type for a transformers model class name (Auto class or concrete), None if generic."""
    return next((t for suffix, t in TASK_TYPES.items() if class_name.endswith(suffix)), None)


def modules_to_save(model: nn.Module, head_modules: tuple[str, ...]) -> list[str]:
    """Head modules (and the pooler) present in ``model``: trained in full and saved with the adapter."""
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return [name for name in (*head_modules, *HEAD_FEEDERS) if name in present]


def backbone_linears(model: nn.Module, trained_in_full: Sequence[str]) -> list[str]:
    """Full names of every linear layer outside ``trained_in_full`` (head, pooler) and the LM head.

    LoRA's default targets: on RT, at the same rate, they beat query/value alone and matched full
    fine-tuning (bench/RESULTS.md, PEFT sweep). peft's own ``"all-linear"`` leaves out only an LM head or a
    sequence-classification head, so BERT's pooler and a token/QA head, trained in full as
    ``modules_to_save``, would be named as LoRA targets too; full names keep the saved config exact.
    """
    skip = set(trained_in_full)
    lm_head = getattr(model, "get_output_embeddings", lambda: None)()  # a transformers model's LM head
    linears = ((name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear | Conv1D))
    return sorted(name for name, m in linears if m is not lm_head and not skip & set(name.split(".")))


def apply_lora(model: nn.Module, params: BaseModel, head_modules: tuple[str, ...]) -> Adapted:
    """The LoRA ``apply``: peft's LoRA on ``params.target_modules``, or on every backbone linear if None."""
    lora = cast(LoraParams, params)
    if lora.target_modules is None:
        targets = backbone_linears(model, modules_to_save(model, head_modules))
        lora = lora.model_copy(update={"target_modules": targets})
    return applier(LoraConfig, "lora")(model, lora, head_modules)


# peft's per-architecture default targets, for the methods that fall back on them
PEFT_DEFAULT_TARGETS: dict[type[PeftConfig], Mapping[str, Any]] = {
    AdaLoraConfig: TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING,
    IA3Config: TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
}


def applier(
    config_class: type[PeftConfig], name: str, **fixed: Any
) -> Callable[[nn.Module, BaseModel, tuple[str, ...]], Adapted]:
    """The method's ``apply``: its params into ``config_class``, then ``get_peft_model``.

    The params are named as peft names them (tunelab's own are marked ``exclude=True``) and join the
    task wiring and ``fixed`` in the config; peft's refusals are keyed to the method.
    """

    def apply(model: nn.Module, params: BaseModel, head_modules: tuple[str, ...]) -> Adapted:
        values = params.model_dump()
        defaults = PEFT_DEFAULT_TARGETS.get(config_class)
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if defaults is not None and values.get("target_modules") is None and model_type not in defaults:
            # peft has no default targets for this architecture (e.g. ViT): every backbone linear, as LoRA
            values["target_modules"] = backbone_linears(model, modules_to_save(model, head_modules))
            if "feedforward_modules" in values and values["feedforward_modules"] is None:
                values["feedforward_modules"] = []  # IA3 then rescales every target's output
        config = config_class(**values, **fixed, **_common(model, head_modules))
        try:
            with peft_wrapping():
                return Adapted(model=get_peft_model(model, config))
        except ValueError as exc:
            raise ConfigError(f"methods.{name}: peft refused the config: {exc}") from None

    return apply


def _common(model: nn.Module, head_modules: tuple[str, ...]) -> dict[str, Any]:
    return {
        "task_type": task_type(type(model).__name__),
        "modules_to_save": modules_to_save(model, head_modules),
    }


def refuses_restructuring(params: Any, target: Target) -> str | None:
    """Refuse a restructuring neighbour: adapters are saved as deltas over the unchanged base.

    A restructuring method (e.g. MoE upcycling) adds weights the base lacks.
    """
    if target.restructuring:
        names = " and ".join(target.restructuring)
        return (
            f"an adapter artifact stores only adapter weights over the unchanged base model, and {names} "
            f"adds weights the base does not have; train {names} with full"
        )
    return None


def refuses_unless(served: tuple[TaskType, ...], why: str) -> Callable[[Any, Target], str | None]:
    """A prompt-learning refusal: task types outside ``served``, block masks, restructuring neighbours.

    ``why`` names {model_class}. Under a block mask peft cannot prepend its row of ones for the
    virtual tokens, which it joins to a 2D padding mask.
    """

    def refuses(params: Any, target: Target) -> str | None:
        if task_type(target.model_class) not in served:
            return why.format(model_class=target.model_class)
        padding = refuses_block_mask("joins its virtual tokens to a 2D padding mask", target)
        return padding or refuses_restructuring(params, target)

    return refuses


# At or below this train.lr a LoRA/IA3 run is warned: it is a full fine-tuning rate (examples/sentiment.yaml
# trains at 1e-4), and on RT LoRA lost accuracy at each lower rate tried below 2e-3 (1e-3, 5e-4;
# bench/RESULTS.md, PEFT sweep).
FULL_FINE_TUNING_LR = 1e-4
# Why PEFT methods refuse model.previous_run: an adapter artifact is loaded over a saved base model.
ADAPTER_BASE = (
    "saves an adapter over a saved base model, and model.previous_run grows the previous model's head "
    "(no saved base holds it); continue a run with full or freeze"
)


def warns_on_full_fine_tuning_lr(method: str, rate: str) -> Callable[[Any, RunConfig], list[str]]:
    """A ``conflicts`` hook that refuses nothing but warns when ``train.lr`` suits full fine-tuning.

    Too small a rate is legal (the run trains, only less per step), so it is a warning, not a refusal.
    A continual run is refused (``ADAPTER_BASE``).
    """

    def conflicts(params: Any, cfg: RunConfig) -> list[str]:
        if cfg.model.previous_run is not None:
            return refuses_previous_run(method, ADAPTER_BASE)(params, cfg)
        if cfg.train.lr <= FULL_FINE_TUNING_LR:
            warnings.warn(
                f"train.lr {cfg.train.lr:g} is a full fine-tuning rate; {method} trains few parameters and "
                f"needs a larger one (about {rate}, bench/RESULTS.md PEFT sweep)",
                UserWarning,
                stacklevel=2,
            )
        return []

    return conflicts


class _Params(BaseModel):
    """Base of the peft methods' params: unknown keys and later mutation are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraParams(_Params):
    """LoRA: W + (alpha/r) B A on the target linears; rsLoRA scales by alpha/sqrt(r); DoRA adds magnitudes."""

    r: int = Field(8, gt=0, description="Rank of the update B A.")
    lora_alpha: float = Field(16.0, gt=0, description="Scaling numerator: the update is scaled by alpha/r.")
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] | None = Field(
        None,
        description="Module names (suffixes) to adapt, e.g. [query, value]; None adapts every linear layer "
        "of the backbone (BERT: query, key, value, attention output, FFN in and out; Llama: q/k/v/o and "
        "gate/up/down), not the task head, pooler or LM head.",
    )
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha/sqrt(r) (rsLoRA).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA): learn magnitude and direction.")


class AdaLoraParams(_Params):
    """AdaLoRA: SVD-shaped LoRA whose total rank budget shrinks from init_r to target_r per module."""

    init_r: int = Field(12, gt=0, description="Initial rank of every adapted module.")
    target_r: int = Field(4, gt=0, description="Average rank per module once the budget has shrunk.")
    lora_alpha: float = Field(32.0, gt=0, description="Scaling numerator (as LoRA's lora_alpha).")
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: list[str] | None = Field(
        None,
        description="Module names (suffixes) to adapt; None uses peft's per-architecture default "
        "(query, value for BERT; q_proj, v_proj for Llama), or every backbone linear where peft has none "
        "(e.g. ViT).",
    )
    tinit_ratio: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        exclude=True,
        description="Fraction of the run's steps trained at full rank before pruning.",
    )
    tfinal_ratio: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        exclude=True,
        description="Fraction of the run's steps trained at the final budget.",
    )
    deltaT: int = Field(1, gt=0, description="Re-allocate the budget every deltaT optimizer steps.")  # noqa: N815  (peft's name)
    orth_reg_weight: float = Field(0.5, ge=0.0, description="Weight of the orthogonality regulariser.")

    @model_validator(mode="after")
    def _budget_phase(self) -> AdaLoraParams:
        """Check the schedule: peft needs steps between the initial and final phases; budgets only shrink."""
        if self.tinit_ratio + self.tfinal_ratio >= 1.0:
            raise ValueError("tinit_ratio + tfinal_ratio must leave steps for the budget phase (sum < 1)")
        if self.target_r > self.init_r:
            raise ValueError("target_r must not exceed init_r: the budget only shrinks")
        return self


class _RankAllocator(Protocol):
    """peft's AdaLoRA ``RankAllocator``: importance averages per parameter name."""

    ipt: dict[str, torch.Tensor]
    exp_avg_ipt: dict[str, torch.Tensor]
    exp_avg_unc: dict[str, torch.Tensor]


class _AdaLoraTuner(Protocol):
    """peft's ``AdaLoraModel`` (the peft model's ``base_model``)."""

    rankallocator: _RankAllocator

    def update_and_allocate(self, global_step: int) -> None:
        """Update importances from the current gradients and mask ranks to the step's budget."""


class _AdaLoraPeftModel(Protocol):
    """A ``PeftModel`` wrapping AdaLoRA: the parts of it that tunelab reads and writes."""

    peft_config: dict[str, AdaLoraConfig]
    base_model: _AdaLoraTuner


def _adalora(model: nn.Module) -> _AdaLoraPeftModel:
    """``model`` as the AdaLoRA ``PeftModel`` it is (``nn.Module`` attributes are untyped)."""
    return cast(_AdaLoraPeftModel, model)


def rank_budget(model: nn.Module) -> int:
    """Ranks currently kept over all AdaLoRA modules (the initial ranks until a budget is allocated)."""
    config = _adalora(model).peft_config["default"]
    if config.rank_pattern:
        return int(sum(sum(kept) for kept in config.rank_pattern.values()))
    return sum(cast(dict[str, int], m.r)["default"] for m in model.modules() if hasattr(m, "lora_E"))


def adalora_step(adapted: Adapted, params: AdaLoraParams, ctx: OptimizerStepContext) -> dict[str, float]:
    """Score importances from this step's gradients and mask ranks to the current budget (peft's call)."""
    model: nn.Module = getattr(adapted.model, "module", adapted.model)  # DDP-wrapped on several processes
    peft_model = _adalora(model)
    config = peft_model.peft_config["default"]
    config.total_step = ctx.total_steps
    config.tinit = int(params.tinit_ratio * ctx.total_steps)
    config.tfinal = int(params.tfinal_ratio * ctx.total_steps)
    peft_model.base_model.update_and_allocate(ctx.step - 1)  # peft counts steps from 0
    return {"adalora_rank_budget": float(rank_budget(model))}


class AdaLoraState(nn.Module):
    """AdaLoRA's importance averages and rank pattern as checkpoint state (:class:`RunState`).

    peft keeps them in its rank allocator and config, outside the weights, so without this a resumed
    run would restart its importance estimates and budget from scratch.
    """

    def run_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Importance averages and the allocated rank pattern (as bool masks) of the AdaLoRA model."""
        peft_model = _adalora(model)
        allocator = peft_model.base_model.rankallocator
        pattern = peft_model.peft_config["default"].rank_pattern or {}
        return {
            **{f"exp_avg_ipt/{n}": t.contiguous() for n, t in allocator.exp_avg_ipt.items()},
            **{f"exp_avg_unc/{n}": t.contiguous() for n, t in allocator.exp_avg_unc.items()},
            **{f"rank_pattern/{n}": torch.tensor(kept, dtype=torch.bool) for n, kept in pattern.items()},
        }

    def restore(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        """Put the checkpointed averages and rank pattern back into peft's allocator and config."""
        allocator = _adalora(model).base_model.rankallocator
        parts: dict[str, dict[str, torch.Tensor]] = {"exp_avg_ipt": {}, "exp_avg_unc": {}, "rank_pattern": {}}
        for key, tensor in tensors.items():
            kind, name = key.split("/", 1)
            parts[kind][name] = tensor
        allocator.exp_avg_ipt, allocator.exp_avg_unc = parts["exp_avg_ipt"], parts["exp_avg_unc"]
        allocator.ipt = {
            n: torch.zeros_like(t) for n, t in parts["exp_avg_ipt"].items()
        }  # recomputed each step
        if parts["rank_pattern"]:
            _adalora(model).peft_config["default"].rank_pattern = {
                n: t.tolist() for n, t in parts["rank_pattern"].items()
            }


def apply_adalora(model: nn.Module, params: BaseModel, head_modules: tuple[str, ...]) -> Adapted:
    """The AdaLoRA ``apply``: peft's AdaLoRA with its allocator state as a checkpointed companion.

    ``total_step`` is a placeholder peft requires; ``adalora_step`` sets the plan's count before any use.
    """
    adapted = applier(AdaLoraConfig, "adalora", total_step=1)(model, params, head_modules)
    return Adapted(model=adapted.model, companions={"adalora": AdaLoraState()})


class IA3Params(_Params):
    """IA3: learned vectors rescaling keys, values and feed-forward activations."""

    target_modules: list[str] | None = Field(
        None,
        description="Modules to rescale; None: peft's default, or every backbone linear where peft has none "
        "(e.g. ViT).",
    )
    feedforward_modules: list[str] | None = Field(
        None,
        description="Subset of target_modules that are feed-forward (scaled on the input side); None: "
        "peft's default, or none where peft has no default targets.",
    )


class PrefixParams(_Params):
    """Prefix tuning: trained key/value prefixes in every attention layer."""

    num_virtual_tokens: int = Field(20, gt=0, description="Prefix length.")
    prefix_projection: bool = Field(False, description="Reparametrise the prefix through an MLP.")


class PromptParams(_Params):
    """Prompt tuning: trained soft-prompt embeddings prepended to the input."""

    num_virtual_tokens: int = Field(20, gt=0, description="Soft-prompt length.")


LORA = MethodSpec(
    "lora",
    LoraParams,
    apply_lora,
    group="trainable",
    refuses=refuses_restructuring,
    conflicts=warns_on_full_fine_tuning_lr("lora", "2e-3"),
)
ADALORA = MethodSpec(
    "adalora",
    AdaLoraParams,
    apply_adalora,
    on_optimizer_step=adalora_step,
    group="trainable",
    refuses=refuses_restructuring,
    conflicts=refuses_previous_run("adalora", ADAPTER_BASE),
)
IA3 = MethodSpec(
    "ia3",
    IA3Params,
    applier(IA3Config, "ia3"),
    group="trainable",
    refuses=refuses_restructuring,
    conflicts=warns_on_full_fine_tuning_lr("ia3", "1e-2"),
)
# Prefix tuning: peft's path for non-LM heads needs ``past_key_values`` in the backbone's forward.
PREFIX = MethodSpec(
    "prefix_tuning",
    PrefixParams,
    applier(PrefixTuningConfig, "prefix_tuning"),
    group="trainable",
    refuses=refuses_unless(
        (TaskType.CAUSAL_LM, TaskType.SEQ_2_SEQ_LM),
        "prefix tuning needs a forward that takes past_key_values, which transformers 5 {model_class} "
        "models do not declare (peft refuses them); use lora or prompt_tuning",
    ),
    conflicts=refuses_previous_run("prefix_tuning", ADAPTER_BASE),
)
# Soft prompts shift token positions: only heads that do not read per-token outputs.
PROMPT = MethodSpec(
    "prompt_tuning",
    PromptParams,
    applier(PromptTuningConfig, "prompt_tuning"),
    group="trainable",
    refuses=refuses_unless(
        (TaskType.SEQ_CLS, TaskType.CAUSAL_LM),
        "prompt tuning prepends virtual tokens to the sequence, so per-token outputs of {model_class} "
        "no longer line up with the labels; use lora",
    ),
    conflicts=refuses_previous_run("prompt_tuning", ADAPTER_BASE),
)
SPECS = (LORA, ADALORA, IA3, PREFIX, PROMPT)
