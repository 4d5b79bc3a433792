"""Dynamic int8 quantization of every ``nn.Linear``, stored as int8 safetensors and rebuilt on load.

Which API: ``torch.ao.quantization.quantize_dynamic`` with a per-channel weight qconfig. torch 2.13
still ships it but marks it deprecated in favour of torchao's ``quantize_`` with
``Int8DynamicActivationInt8WeightConfig``. We stay on torch.ao because it needs no extra dependency
and its fbgemm/x86 kernels were faster than torchao 0.18's int8 path on this CPU for MiniLM at batch
32 in a quick side-by-side check (not a recorded benchmark; the recorded int8 figures are in
bench/RESULTS.md). The deprecation warnings are silenced around the torch.ao calls only; moving to
torchao means replacing ``quantize_int8`` and the (de)serialisation below, nothing else.

Why hand-written storage: quantized modules keep their weights in packed C++ objects that neither
``save_pretrained`` nor safetensors can write, and pickling them is not allowed here. So we store
what defines them exactly (int8 weight, per-channel scales and zero points, fp32 bias) next to the
ordinary fp32 tensors in ``model_int8.safetensors`` and, on load, quantize a freshly built skeleton
with the same recipe and put the stored weights in. The file is deliberately not called
``model.safetensors``: plain ``from_pretrained`` then fails loudly instead of silently loading a
model with random Linear weights. Disk size shrinks by about 4x for the Linear weights; embeddings
and LayerNorms stay fp32 (dynamic quantization only covers Linear).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

from tunelab.errors import CheckpointError

if TYPE_CHECKING:
    from tunelab.models.protocols import Configured

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model_int8.safetensors"
METHOD = "dynamic int8 (torch.ao quantize_dynamic, per-channel weights, nn.Linear only)"
_PACKED = ("weight_int8", "weight_scales", "weight_zero_points", "bias")


@contextlib.contextmanager
def _torch_ao_deprecations() -> Iterator[None]:
    """Silence torch.ao's deprecation notices (documented in the module docstring), nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.ao\.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated", category=UserWarning)
        yield


def quantize_int8(model: nn.Module, keep: Collection[str] = ()) -> nn.Module:
    """A copy-free int8 version of ``model``: its Linears become dynamic int8 Linears (in place).

    Linears inside a module named in ``keep`` (the task head) stay fp32: the head is a tiny share of
    the weights, its error lands directly on the predictions, and a head may read its weight tensor
    directly (tunelab's ``MeanPoolingClassifier`` scales it), which a packed int8 module has no longer.
    Activations are quantized per batch at run time, weights once, per output channel.
    """
    kept = set(keep)
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and kept.isdisjoint(name.split("."))
    ]
    return _quantize(model, names)


def _quantize(model: nn.Module, names: Collection[str]) -> nn.Module:
    """Quantize exactly the Linears called ``names`` (what ``load_int8`` rebuilds from a file)."""
    model.float().eval()
    with _torch_ao_deprecations():
        quantized = quantize_dynamic(  # type: ignore[no-untyped-call]  # torch.ao leaves it unannotated
            model, dict.fromkeys(names, per_channel_dynamic_qconfig), dtype=torch.qint8, inplace=True
        )
    return cast(nn.Module, quantized)


def is_int8(model: nn.Module) -> bool:
    """Whether ``model`` runs int8 Linear layers (``quantize_int8``), which have kernels of their own."""
    return any(isinstance(m, DynamicLinear) for m in model.modules())


def int8_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Plain tensors that define a ``quantize_int8`` model exactly (see module docstring)."""
    quantized = {name: m for name, m in model.named_modules() if isinstance(m, DynamicLinear)}
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        owner = key.split("._packed_params")[0].rsplit(".", 1)[0]
        if owner not in quantized and isinstance(value, torch.Tensor):
            state[key] = value
    for name, module in quantized.items():
        weight, bias = module._weight_bias()  # type: ignore[no-untyped-call]  # unannotated in torch.ao
        state[f"{name}.weight_int8"] = weight.int_repr()
        state[f"{name}.weight_scales"] = weight.q_per_channel_scales()
        state[f"{name}.weight_zero_points"] = weight.q_per_channel_zero_points()
        if bias is not None:
            state[f"{name}.bias"] = bias.detach()
    # Tied tensors (embeddings shared with an LM head, an MLM decoder bias) are one storage under several
    # names, which safetensors refuses; each name gets its own copy, and loading copies values into the
    # skeleton's (still tied) parameters, so the ties hold again after a load.
    return {key: value.detach().clone().contiguous() for key, value in state.items()}


def save_int8(model: nn.Module, dest: Path) -> None:
    """Write config + ``model_int8.safetensors`` of a ``quantize_int8`` model into the open dir ``dest``."""
    cast("Configured", model).config.save_pretrained(dest)
    save_file(int8_state_dict(model), str(dest / WEIGHTS_FILE), metadata={"format": "pt", "tunelab": METHOD})


def load_int8(path: Path, model: nn.Module) -> nn.Module:
    """Rebuild a model written by ``save_int8`` into ``model``, the saved structure with random weights.

    The fp32 tensors load into the skeleton before quantizing (quantized modules cannot take a
    partial state dict); the int8 weights then replace what quantizing the random Linears produced.
    """
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{path}: int8 export without {WEIGHTS_FILE}; re-export it with tunelab export")
    state = load_file(str(weights))
    names = [key.removesuffix(".weight_int8") for key in state if key.endswith(".weight_int8")]
    packed = {f"{name}.{part}" for name in names for part in _PACKED}
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in state.items() if k not in packed}, strict=False
    )
    missing = sorted(set(missing) - {f"{name}.{p}" for name in names for p in ("weight", "bias")})
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: does not match config.json (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model = _quantize(model, names)
    quantized = {name: m for name, m in model.named_modules() if isinstance(m, DynamicLinear)}
    if set(quantized) != set(names):
        raise CheckpointError(
            f"{weights}: int8 layers {sorted(set(names) ^ set(quantized))[:5]} do not match"
        )
    with _torch_ao_deprecations():
        for name, module in quantized.items():
            weight = torch._make_per_channel_quantized_tensor(
                state[f"{name}.weight_int8"],
                state[f"{name}.weight_scales"],
                state[f"{name}.weight_zero_points"],
                0,
            )
            module.set_weight_bias(weight, state.get(f"{name}.bias"))
    return model.eval()
