"""Parameter-efficient fine-tuning through the ``peft`` library: params -> peft config -> ``get_peft_model``.

LoRA (Hu et al. 2021; rsLoRA, Kalajdzievski 2023; DoRA, Liu et al. 2024), IA3 (Liu et al. 2022), prefix
tuning (Li & Liang 2021) and prompt tuning (Lester et al. 2021); AdaLoRA, which adds a per-step budget,
is in ``methods/adalora.py`` on the same wiring. Nothing is re-implemented: what tunelab adds is the
task wiring (peft's task type from the task's model class; the task head and pooler trained and saved
in ``modules_to_save``, so an adapter reloads with identical predictions) and refusals at validation
for what peft cannot do with our transformers:

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
from typing import Any, cast

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
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from transformers.pytorch_utils import Conv1D

from tunelab.config import RunConfig
from tunelab.errors import ConfigError
from tunelab.methods.spec import (
    Adapted,
    MethodSpec,
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


class ParamsBase(BaseModel):
    """Base of the peft methods' params: unknown keys and later mutation are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraParams(ParamsBase):
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


class IA3Params(ParamsBase):
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


class PrefixParams(ParamsBase):
    """Prefix tuning: trained key/value prefixes in every attention layer."""

    num_virtual_tokens: int = Field(20, gt=0, description="Prefix length.")
    prefix_projection: bool = Field(False, description="Reparametrise the prefix through an MLP.")


class PromptParams(ParamsBase):
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
SPECS = (LORA, IA3, PREFIX, PROMPT)  # AdaLoRA: methods/adalora.py
