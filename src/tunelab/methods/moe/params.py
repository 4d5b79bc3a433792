"""MoE method parameters; defaults and their sources are quoted from ../shared/MOE.md."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Params(BaseModel):
    """Upcycle a dense encoder/decoder into a DeepSeekMoE (shared + fine-grained routed experts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_shared_experts: int | None = Field(
        None,
        ge=0,
        description=(
            "K_s always-on, un-gated shared experts of 1/granularity FFN width ([DSM] eq. 9), merged "
            "into one MLP. None = granularity - 1 for init='partition' (the shared MLP is every neuron "
            "slice but the last, see upcycle.py), 0 for init='copy'."
        ),
    )
    n_routed_experts: int = Field(
        4,
        ge=1,
        description=(
            "N_r routed experts per MoE layer ([V2] eq. 21). Default 4: with 8 the worst layer's dev "
            "max/mean load ended at 1.20-1.51 on RT, with 4 at 1.17 (upcycle.py)."
        ),
    )
    top_k: int = Field(
        1,
        ge=1,
        description=(
            "K_r routed experts activated per token ([DSM] eq. 10). Default 1: shared 3/4 + one routed "
            "1/4 slice = the dense FFN's width, so active FFN parameters equal dense."
        ),
    )
    init: Literal["partition", "copy"] = Field(
        "partition",
        description=(
            "How experts are built from the dense FFN: 'partition' splits its intermediate neurons into "
            "`granularity` slices (an FFN is the sum of its neuron slices; shared experts take the first "
            "K_s slices, routed experts cycle over the rest); 'copy' makes every routed expert a full copy "
            "(Sparse Upcycling; no shared experts)."
        ),
    )
    granularity: int = Field(
        4,
        ge=1,
        description="m: expert width = dense intermediate / m for init='partition' ([DSM] §3.1: 0.25x FFN).",
    )
    score_func: Literal["softmax", "sigmoid"] = Field(
        "sigmoid",
        description=(
            "Affinity s_{i,t}: softmax over routed experts (DSM/V2) or sigmoid (V3). Default sigmoid: "
            "with raw gates its compensating scale is 2 instead of N_r, so the same router spread moves "
            "the gate 4x less at N_r = 8 (upcycle.py)."
        ),
    )
    topk_before_softmax: bool = Field(
        False,
        description=(
            "Mixtral-compatible gating (top-K of logits, then softmax over the K). Default False is "
            "DeepSeek's softmax-then-top-K (DeepSeekMoE, arXiv 2401.06066)."
        ),
    )
    norm_topk_prob: bool = Field(
        False,
        description=(
            "Renormalise the selected K gates to sum to 1 (V3, [V3] eq. 13). Default False keeps g = s "
            "as in DeepSeekMoE/V2 (the compensating scale restores the dense output); with top_k=1 "
            "True would make every gate 1 and the task loss would never reach the router."
        ),
    )
    routed_scaling_factor: float | None = Field(
        None,
        gt=0,
        description=(
            "Multiplier on the routed output (V3: 2.5). None = the upcycling compensating scale "
            "P / (K_r * g0) that makes the MoE reproduce the dense FFN at step 0 (see upcycle.py)."
        ),
    )
    n_group: int = Field(1, ge=1, description="Expert groups for group-limited routing ([V3-code]: 8).")
    topk_group: int = Field(
        1, ge=1, description="Groups each token may use ([V3-code]: 4); = n_group is off."
    )
    first_k_dense: int = Field(
        0, ge=0, description="Leading FFN layers kept dense (DeepSeekMoE 16B: 1, V3: 3 of 61)."
    )
    capacity_factor: float | None = Field(
        None,
        gt=0,
        description=(
            "Per-expert capacity = ceil(cf * tokens * K_r / N_r); overflow tokens are dropped for that "
            "expert (counted in train/moe_dropped_frac). None = dropless (DeepSeek default)."
        ),
    )
    router_init_std: float = Field(
        0.001,
        ge=0,
        description=(
            "Std of the new router's centroids (mergekit gate_mode random); 0 gives uniform scores (exact "
            "upcycling, but every token ties). Default 1e-3 keeps the step-0 distance to ~1 % (upcycle.py)."
        ),
    )
    upcycle_noise: float = Field(
        0.0,
        ge=0,
        description="Gaussian noise on expert weights, relative to each weight's std (breaks symmetry).",
    )
    reinit_ratio: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Drop-Upcycling: fraction of each routed expert's intermediate neurons re-initialised.",
    )
    aux_loss_alpha: float = Field(
        0.01,
        ge=0,
        description=(
            "α1 expert-level balance loss ([DSM] 16B / V2-Lite: 0.001; default 0.01 as the 2B model, "
            "whose short training is closer to a fine-tune)."
        ),
    )
    device_loss_alpha: float = Field(
        0.0, ge=0, description="α2 device-level balance loss ([DSM] 145B / V2: 0.05); 0 disables."
    )
    n_devices: int = Field(1, ge=1, description="D device groups of routed experts for the α2 loss.")
    seq_aux_alpha: float = Field(
        0.0, ge=0, description="α of the V3 sequence-wise balance loss ([V3] §4.2: 0.0001); 0 disables."
    )
    bias_update_speed: float = Field(
        0.0001,
        ge=0,
        description=(
            "γ of V3 aux-loss-free balancing ([V3] §4.2: 0.001 for a trained router); 0 disables it. "
            "Default 1e-4: a step must be small against the spread of the upcycled router's scores "
            "(~3e-3), or the bias flips whole experts on and off (measured, upcycle.py)."
        ),
    )
    bias_freeze_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Final fraction of optimizer steps with γ = 0 ([V3]: last 500B of 14.8T tokens).",
    )
    router_trainable: bool = Field(True, description="Train the router centroids (False freezes them).")
    router_lr_scale: float = Field(
        0.01,
        gt=0,
        description=(
            "Learning-rate multiplier of the router centroids. AdamW moves every weight by ~lr per step "
            "whatever its gradient's size, so at the base lr a 1e-3-std router is rewritten within ~10 "
            "steps and its drift outruns the aux-free bias (measured, upcycle.py); 0.01 keeps it learning "
            "at the pace of its own scale."
        ),
    )
    esft_top_p: float | None = Field(
        None,
        gt=0,
        le=1,
        description=(
            "ESFT gate-score selection: the first `esft_score_steps` optimizer steps only score experts "
            "(no gradients, nothing changes); then only the routed experts whose cumulative average gate "
            "score reaches p per layer keep training, the others are frozen (the selection is saved)."
        ),
    )
    esft_score_steps: int = Field(1, ge=1, description="Optimizer steps whose tokens score experts for ESFT.")

    @property
    def n_shared(self) -> int:
        """K_s with the default resolved (``n_shared_experts`` None -> granularity - 1, or 0 for copy)."""
        if self.n_shared_experts is not None:
            return self.n_shared_experts
        return self.granularity - 1 if self.init == "partition" else 0

    @model_validator(mode="after")
    def _check(self) -> Params:
        problems = []
        if self.top_k > self.n_routed_experts:
            problems.append(f"top_k ({self.top_k}) exceeds n_routed_experts ({self.n_routed_experts})")
        if self.n_routed_experts % self.n_group:
            problems.append(
                f"n_routed_experts ({self.n_routed_experts}) must divide into n_group ({self.n_group})"
            )
        if self.topk_group > self.n_group:
            problems.append(f"topk_group ({self.topk_group}) exceeds n_group ({self.n_group})")
        if self.n_routed_experts % self.n_devices:
            problems.append(f"n_routed_experts must divide into n_devices ({self.n_devices})")
        if self.init == "copy" and self.n_shared:
            problems.append("init='copy' needs n_shared_experts=0 (a shared full copy would double the FFN)")
        if self.init == "partition" and self.n_shared >= self.granularity:
            problems.append(
                f"n_shared_experts ({self.n_shared}) must be < granularity ({self.granularity}) so "
                "routed experts keep at least one neuron slice"
            )
        if self.top_k == 1 and (self.norm_topk_prob or self.topk_before_softmax):
            problems.append(
                "top_k=1 with norm_topk_prob or topk_before_softmax makes every gate 1, so the task loss "
                "never reaches the router; use norm_topk_prob=false (the default)"
            )
        if self.topk_before_softmax and self.score_func != "softmax":
            problems.append("topk_before_softmax applies to score_func='softmax' only")
        if problems:
            raise ValueError("; ".join(problems))
        return self
