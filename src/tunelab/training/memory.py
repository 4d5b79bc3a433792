"""Training memory per device, estimated from the run's model built on the meta device (``tunelab estimate``).

The model is built exactly as ``train`` builds it (task head, methods applied: LoRA adapters, MoE
experts) but on the meta device, so parameter counts and dtypes are the real ones and the estimate
costs no weights. Symbols: P all parameters, P_t trainable ones, N world size, b ``train.batch_size``
(rows per device per micro-batch), s the task's ``max_length``, T = b·s tokens, h hidden size, a
heads, i FFN width, V vocabulary. Byte sizes: w = 2 under bf16/fp16 autocast else 4 (a matmul input
saved for backward), f = 4 (norms, the residual stream and CPU attention stay fp32 under autocast),
m = w on CPU (dropout keeps its mask as a float tensor) or 1 on CUDA (a bool mask).

Per device, in bytes, each term with why it is held; the total adds them as if all were alive at
once (backward frees activations while it fills the gradients, and needs transient buffers that
are not counted: on MiniLM the measured step sat 4-16 % above the estimate):

- parameters = Σ numel·element_size over every parameter (frozen base, adapters, companions such
  as a distillation teacher): the weights live on every device; ÷N under ``--shard full``.
- gradients = Σ_trainable numel·element_size: one gradient per trainable parameter, in its dtype;
  ÷N when sharded (``grad_optimizer`` or ``full``).
- DDP buckets = gradients, when N > 1 unsharded: DDP all-reduces through bucket buffers that hold a
  second copy of the gradients.
- AdamW moments = 2 · gradients: ``exp_avg`` and ``exp_avg_sq``, in the parameters' dtype; ÷N when
  sharded. There is no fp32 master copy: ``train.precision`` autocasts fp32 weights, so the weights
  are their own master and only the autocast copies below are low precision.
- autocast copies = 2 · Σ linear weights, under bf16/fp16 autocast: each linear weight is cast
  once per forward and the copy is saved for the input gradient until backward.
- gathered block = one block's parameters, under ``--shard full`` with N > 1: FSDP/ZeRO-3 all-gathers
  a block's full weights around its forward and backward.
- activations = stem + Σ_blocks A_block + head, for one micro-batch (gradient accumulation frees
  them per micro-batch). Blocks before the first trainable parameter save nothing (no gradient
  reaches them); the stem (embedding norm input and dropout mask, 2·T·h·f) only when it trains.
  With ``train.gradient_checkpointing`` a block keeps only its input (T·h·f) and one block is
  recomputed at a time: L·T·h·f + max A_block. Per block:

  - T·w·Σ in_ℓ over trainable linears ℓ (tokens T; T·k/N_e on average for a routed expert): each saves its
    input for its weight gradient; frozen linears (a LoRA base) save none, their adapters do. Without
    autocast, sibling linears of equal input width (q/k/v, gate/up) read one tensor and save it once.
  - T·(h + 2·h_kv)·f + b·a·s²·(f + p_a·(f + m)): q, k, v kept by the score and value matmuls, and
    the attention probabilities, their dropout mask and the dropped probabilities (CPU SDPA takes
    the math path in training; CUDA's fused kernels keep the output and b·a·s log-sum-exps instead).
  - T·i·w·g, g = 1 (GELU: its input) or 3 (gated MLP: activation input and output, up output).
    MoE: T·(i_s + k·i_r)·w·g for the shared and top-k routed experts, T·k·h·(w + f) for the routed
    outputs (kept by the gate product, and gated in fp32 by ``index_add_``), T·N_e·f router scores.
  - 2·T·h·f + 2·T·h·m·[p_h > 0]: the inputs of the two norms and the residual dropout masks.
  - T·in·f per LoRA input with dropout (its mask; the dropped copy is lora_A's saved input above).

  head = T·h·f (the last block's output, kept by the head's input) + T·V·(w + f) for an LM head
  (logits and their fp32 log-softmax).

Not counted: buffers (position ids), transient backward and optimizer workspace, the allocator's
slack. ``--measure`` shows how much these add on this machine.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import nn

from tunelab.errors import ConfigError
from tunelab.methods.moe.layer import Expert, MoEFeedForward
from tunelab.methods.spec import Adapted
from tunelab.models.adapter import lora_dropout_widths
from tunelab.models.load import build_empty
from tunelab.tasks.spec import model_config_overrides
from tunelab.training.plan import Plan
from tunelab.training.setup import apply_methods

Shard = Literal["none", "grad_optimizer", "full"]
# What each sharding splits across devices: nothing (DDP), ZeRO-2-like, ZeRO-3/FSDP-like.
SPLIT: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "grad_optimizer": frozenset({"gradients"}),  # AdamW state follows the gradients
    "full": frozenset({"gradients", "parameters"}),
}
FP32 = 4


@dataclass(frozen=True)
class Term:
    """One line of the estimate: name, its formula in short, bytes per device."""

    name: str
    formula: str
    nbytes: int


@dataclass(frozen=True)
class Shape:
    """One micro-batch on one device and how its activations are stored.

    ``matmul_bytes`` is w (2 under bf16/fp16 autocast, else 4); ``cuda``: the device is a GPU, where
    SDPA's fused kernels keep no attention probabilities and dropout masks are bools;
    ``checkpointing`` is ``train.gradient_checkpointing``.
    """

    batch: int
    seq_len: int
    matmul_bytes: int = FP32
    cuda: bool = False
    checkpointing: bool = False

    @property
    def tokens(self) -> int:
        """T = b·s."""
        return self.batch * self.seq_len

    @property
    def mask_bytes(self) -> int:
        """m: a dropout mask element (CUDA keeps bools, the CPU kernel a float of the input's dtype)."""
        return 1 if self.cuda else self.matmul_bytes


@dataclass(frozen=True)
class Estimate:
    """The terms of one run's per-device memory, and what they were computed for."""

    terms: tuple[Term, ...]
    shape: Shape
    world_size: int
    shard: Shard

    @property
    def total(self) -> int:
        """Bytes of every term."""
        return sum(t.nbytes for t in self.terms)

    def get(self, name: str) -> int:
        """Bytes of the term ``name`` (0 when it does not apply to this run)."""
        return next((t.nbytes for t in self.terms if t.name == name), 0)


def _nbytes(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def param_bytes_by_dtype(modules: list[nn.Module]) -> dict[torch.dtype, int]:
    """Bytes of the distinct parameters of ``modules`` per dtype (tied weights count once)."""
    seen: dict[int, nn.Parameter] = {}
    for module in modules:
        seen.update({id(p): p for p in module.parameters()})
    out: dict[torch.dtype, int] = defaultdict(int)
    for p in seen.values():
        out[p.dtype] += p.numel() * p.element_size()
    return dict(out)


def blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks: the items of every outermost ``ModuleList`` (BERT, Llama, T5 halves)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    inner = {id(sub) for m in lists for sub in m.modules() if sub is not m and isinstance(sub, nn.ModuleList)}
    return [block for m in lists if id(m) not in inner for block in m]


def _geometry(config: Any) -> dict[str, float]:
    """h, a, h_kv, i and the dropout rates from a transformers config (BERT, Llama, GPT-2, T5 names)."""
    h = config.hidden_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    width = getattr(config, "intermediate_size", None) or getattr(config, "d_ff", None) or 4 * h
    p_attn = getattr(config, "attention_probs_dropout_prob", None)
    p_hidden = getattr(config, "hidden_dropout_prob", None)
    shared_rate = getattr(config, "dropout_rate", None) or getattr(config, "resid_pdrop", None) or 0.0
    return {
        "h": h,
        "a": heads,
        "h_kv": h * kv // heads,
        "i": width,
        "p_attn": p_attn if p_attn is not None else getattr(config, "attention_dropout", shared_rate),
        "p_hidden": p_hidden if p_hidden is not None else shared_rate,
    }


def _linear_inputs(block: nn.Module, shape: Shape) -> float:
    """Bytes the trainable linears of ``block`` save as inputs, and a MoE router's fp32 input.

    Routed experts see T·k/N_e tokens each. Without autocast, linears reading one tensor keep one copy:
    siblings of equal input width (q/k/v, gate/up), and a MoE layer's router and shared expert.
    """
    t, w = shape.tokens, shape.matmul_bytes
    share: dict[int, float] = {}  # linear -> its share of the block's tokens
    reader: dict[int, int] = {}  # linear -> the module whose input it reads (fp32 dedup)
    saved: dict[tuple[int, ...], float] = {}
    for moe in (m for m in block.modules() if isinstance(m, MoEFeedForward)):
        top_k = moe.router.cfg.top_k / len(moe.experts)
        share.update({id(lin): top_k for lin in moe.experts.modules() if isinstance(lin, nn.Linear)})
        shared = list(moe.shared.modules()) if moe.shared is not None else []
        reader.update({id(lin): id(moe) for lin in shared if isinstance(lin, nn.Linear)})
        saved[(id(moe), moe.router.weight.shape[1])] = t * moe.router.weight.shape[1] * FP32
    for parent in block.modules():
        for lin in parent.children():
            if isinstance(lin, nn.Linear) and lin.weight.requires_grad:
                # Under autocast each linear casts its input and saves that copy.
                key = (id(lin),) if w != FP32 else (reader.get(id(lin), id(parent)), lin.in_features)
                saved[key] = max(saved.get(key, 0.0), t * share.get(id(lin), 1.0) * lin.in_features * w)
    return sum(saved.values())


def _ffn(block: nn.Module, geo: dict[str, float], shape: Shape) -> float:
    """FFN activations besides linear inputs: dense T·i·w·g, or MoE experts, routed outputs and scores."""
    t, w = shape.tokens, shape.matmul_bytes
    moe = next((m for m in block.modules() if isinstance(m, MoEFeedForward)), None)
    if moe is None:
        ups = [
            m
            for m in block.modules()
            if isinstance(m, nn.Linear) and (m.in_features, m.out_features) == (geo["h"], geo["i"])
        ]
        return t * geo["i"] * w * (3 if len(ups) > 1 else 1)
    first = cast(Expert, moe.experts[0])
    gated = 3 if first.gate is not None else 1
    k, n = moe.router.cfg.top_k, len(moe.experts)
    shared = moe.shared.up.out_features if moe.shared is not None else 0
    experts = t * (shared + k * first.up.out_features) * w * gated
    # A routed output is kept by the gate product (w) and the gated product by index_add_ (fp32).
    return experts + t * k * geo["h"] * (w + FP32) + t * n * FP32


def block_activations(block: nn.Module, geo: dict[str, float], shape: Shape) -> int:
    """A_block: bytes one block saves for backward in one micro-batch (see the module docstring)."""
    t, s, f, m = shape.tokens, shape.seq_len, FP32, shape.mask_bytes
    h, a = geo["h"], geo["a"]
    if shape.cuda:
        attention = t * (2 * h + 2 * geo["h_kv"]) * shape.matmul_bytes + shape.batch * a * s * FP32
    else:
        probs = shape.batch * a * s * s * (f + (f + m) * (geo["p_attn"] > 0))
        attention = t * (h + 2 * geo["h_kv"]) * f + probs
    norms = 2 * t * h * (f + m * (geo["p_hidden"] > 0))
    adapters = t * f * sum(lora_dropout_widths(block))
    return round(_linear_inputs(block, shape) + attention + _ffn(block, geo, shape) + norms + adapters)


def _first_trainable_block(model: nn.Module, stack: list[nn.Module]) -> int:
    """Index of the first block holding a trainable parameter; -1 when the stem (before block 0) trains.

    Parameters are registered stem, blocks, head, so the first trainable one in that order decides.
    """
    block_of = {id(p): i for i, b in enumerate(stack) for p in b.parameters()}
    seen_block = False
    for p in model.parameters():
        index = block_of.get(id(p))
        seen_block |= index is not None
        if p.requires_grad:
            return index if index is not None else (len(stack) if seen_block else -1)
    return len(stack)


def activation_bytes(model: nn.Module, config: Any, shape: Shape) -> int:
    """Saved activations of one micro-batch: stem + blocks (or checkpointed blocks) + head."""
    geo = _geometry(config)
    stack = blocks(model)
    first = _first_trainable_block(model, stack)
    t, h = shape.tokens, geo["h"]
    per_block = [block_activations(b, geo, shape) for b in stack[max(first, 0) :]]
    if shape.checkpointing and per_block:
        body = len(per_block) * t * h * FP32 + max(per_block)
    else:
        body = sum(per_block)
    stem = 2 * t * h * FP32 if first < 0 else 0
    lm_head = getattr(model, "get_output_embeddings", lambda: None)()
    vocab = lm_head.out_features if isinstance(lm_head, nn.Linear) else 0
    head = t * h * FP32 + t * vocab * (shape.matmul_bytes + FP32)
    return round(stem + body + head)


def estimate_model(
    model: nn.Module,
    config: Any,
    shape: Shape,
    companions: list[nn.Module] | None = None,
    world_size: int = 1,
    shard: Shard = "none",
) -> Estimate:
    """Per-device terms (module docstring) of training ``model`` with AdamW on micro-batches of ``shape``."""
    params = param_bytes_by_dtype([model, *(companions or [])])
    grads = _nbytes([p for p in model.parameters() if p.requires_grad])
    split = SPLIT[shard] if world_size > 1 else frozenset()

    def per_device(term: str, nbytes: int) -> tuple[str, int]:
        return (" ÷ N", math.ceil(nbytes / world_size)) if term in split else ("", nbytes)

    dtypes = ", ".join(f"{str(d).removeprefix('torch.')} {n / 2**20:.1f} MiB" for d, n in params.items())
    (p_div, p_bytes), (g_div, g_bytes) = (
        per_device("parameters", sum(params.values())),
        per_device("gradients", grads),
    )
    terms = [
        Term("parameters", f"Σ numel·size ({dtypes}){p_div}", p_bytes),
        Term("gradients", f"trainable numel·size{g_div}", g_bytes),
        Term("AdamW moments", f"2 · gradients (exp_avg, exp_avg_sq){g_div}", 2 * g_bytes),
    ]
    if world_size > 1 and not split:
        terms.append(Term("DDP buckets", "gradients (all-reduce buffers)", grads))
    if shape.matmul_bytes != FP32:
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
        terms.append(Term("autocast copies", "2 B · linear weights", 2 * linear))
    if "parameters" in split:
        largest = max((_nbytes(b.parameters()) for b in blocks(model)), default=0)
        terms.append(Term("gathered block", "one block's parameters (all-gather)", largest))
    formula = "L·T·h·4 + max A_block" if shape.checkpointing else "Σ A_block + stem + head"
    terms.append(
        Term(
            "activations",
            f"{formula}, T = {shape.batch}·{shape.seq_len}",
            activation_bytes(model, config, shape),
        )
    )
    return Estimate(terms=tuple(terms), shape=shape, world_size=world_size, shard=shard)


def autocast_bytes(precision: str) -> int:
    """Bytes w of a saved matmul input under ``train.precision``: 2 with bf16/fp16 autocast, else 4.

    ``auto`` counts as it resolves on this machine; an explicit bf16/fp16 counts as asked, so a GPU
    plan can be estimated here.
    """
    from tunelab.training import resolve_precision

    resolved = resolve_precision(precision) if precision == "auto" else precision
    return 2 if resolved in ("bf16", "fp16") else FP32


def seq_len(plan: Plan) -> int:
    """s: the task's longest input (``max_length``; an encoder-decoder's ``max_source_length``)."""
    params = plan.task_params
    length = getattr(params, "max_length", None) or getattr(params, "max_source_length", None)
    if not isinstance(length, int):
        raise ConfigError(f"task {plan.task.name!r} sets no max_length: its micro-batch size is unknown")
    return length


def build_meta(plan: Plan, labels: list[str]) -> Adapted:
    """The run's model with its head and methods applied, as ``train`` builds it, on the meta device."""
    if not (plan.model_dir / "config.json").is_file():
        raise ConfigError(
            f"model.name_or_path: {plan.model_dir} has no config.json yet (a model tunelab builds from the "
            "data); run train once so it is written, then estimate"
        )
    overrides = model_config_overrides(plan.task, plan.task_params)
    model = build_empty(plan.task.model_class, plan.model_dir, labels, **overrides)
    with torch.device("meta"):  # adapters and experts a method adds are built without storage too
        return apply_methods(plan, model, plan.task_params)


def estimate_plan(
    plan: Plan,
    labels: list[str],
    world_size: int = 1,
    shard: Shard = "none",
    micro_batch: tuple[int, int] | None = None,
) -> Estimate:
    """Per-device memory of training ``plan`` (labels size the head) on ``world_size`` devices.

    ``micro_batch`` (rows, tokens) replaces the config's ``train.batch_size`` x the task's max length,
    e.g. to compare with micro-batches that were measured.
    """
    adapted = build_meta(plan, labels)
    train = plan.cfg.train
    batch, length = micro_batch or (train.batch_size, seq_len(plan))
    shape = Shape(
        batch=batch,
        seq_len=length,
        matmul_bytes=autocast_bytes(train.precision),
        cuda=torch.cuda.is_available(),
        checkpointing=train.gradient_checkpointing,
    )
    config = getattr(adapted.model, "config", None)
    return estimate_model(adapted.model, config, shape, list(adapted.companions.values()), world_size, shard)
