"""AdaLoRA (Zhang et al. 2023) through ``peft``: the shared peft wiring plus a per-step rank budget.

peft leaves the budget update to the training loop (``update_and_allocate`` after each optimizer step)
and keeps its importance averages outside the weights; this module calls the one with the plan's step
count and checkpoints the other, so a resumed run continues its budget exactly.
"""

from __future__ import annotations

from typing import Protocol, cast

import torch
from peft import AdaLoraConfig
from pydantic import BaseModel, Field, model_validator
from torch import nn

from tunelab.methods.peft import ADAPTER_BASE, ParamsBase, applier, refuses_restructuring
from tunelab.methods.spec import Adapted, MethodSpec, OptimizerStepContext, refuses_previous_run, unwrap_ddp


class AdaLoraParams(ParamsBase):
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
    """Score importances from this step's gradients and mask ranks to the current budget (peft's call).

    The budget schedule needs the run's step count, which the loop first tells a method here: the
    first call replaces ``apply_adalora``'s placeholder with it, and later calls find it set.
    """
    model = unwrap_ddp(adapted.model)
    peft_model = _adalora(model)
    config = peft_model.peft_config["default"]
    if config.total_step != ctx.total_steps:
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

    ``total_step`` is a placeholder peft requires; ``adalora_step`` sets the run's count (once) before
    any use.
    """
    adapted = applier(AdaLoraConfig, "adalora", total_step=1)(model, params, head_modules)
    return Adapted(model=adapted.model, companions={"adalora": AdaLoraState()})


SPEC = MethodSpec(
    "adalora",
    AdaLoraParams,
    apply_adalora,
    on_optimizer_step=adalora_step,
    group="trainable",
    refuses=refuses_restructuring,
    conflicts=refuses_previous_run("adalora", ADAPTER_BASE),
)
