"""ONNX export (torch.onnx, dynamo exporter) with an onnxruntime parity check, and an ORT-backed model.

The graph takes ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer makes
them) with dynamic batch and sequence axes and returns ``logits``. Export is refused unless
onnxruntime's logits match eager PyTorch on a probe batch within ``ONNX_ATOL``.

``OrtClassifier`` wraps an InferenceSession as an ``nn.Module`` returning an object with ``.logits``,
so tunelab's evaluation (``predict_logits``) scores the ONNX graph with exactly the code that
scores PyTorch models; no second prediction path exists.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from tunelab.errors import ExportError

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
ONNX_ATOL = 1e-4  # fp32 graph vs eager: only kernel/summation-order differences


def export_onnx(model: nn.Module, probe: Mapping[str, torch.Tensor], dest: Path) -> Path:
    """Write ``dest/model.onnx`` from ``model`` traced on ``probe`` (>= 2 rows, >= 2 tokens)."""
    names = list(probe)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    path = dest / ONNX_FILE
    model.eval()
    with warnings.catch_warnings():
        # The exporter notes that all inputs share one batch/sequence dim; that is the intent.
        warnings.filterwarnings("ignore", message=r".*axis name.*will not be used", category=UserWarning)
        torch.onnx.export(
            model,
            args=(),
            kwargs=dict(probe),
            f=str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_shapes={name: {0: batch, 1: seq} for name in names},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    """A CPU onnxruntime session with a fixed thread count (timings are comparable to torch's)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtClassifier(nn.Module):
    """An onnxruntime session that looks like a HF classifier to tunelab's prediction code."""

    def __init__(self, session: ort.InferenceSession) -> None:
        super().__init__()
        self.session = session
        self.inputs = [i.name for i in session.get_inputs()]
        # predict_logits reads the device from the first parameter; the graph itself runs on CPU.
        self.device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, **batch: torch.Tensor) -> Any:
        """Run the graph on the inputs it declares (as int64, on CPU); returns ``.logits`` like HF.

        Extra batch keys (e.g. targets) are ignored; the logits come back as a CPU tensor.
        """
        feed = {name: batch[name].cpu().numpy().astype(np.int64) for name in self.inputs}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(["logits"], feed)[0]))


@torch.no_grad()
def check_onnx_parity(
    model: nn.Module, session: ort.InferenceSession, probe: Mapping[str, torch.Tensor]
) -> float:
    """Max |ORT - eager| logit difference on ``probe``; raises ExportError above ``ONNX_ATOL``."""
    eager = model.eval()(**probe).logits.float()
    diff = float((OrtClassifier(session)(**probe).logits - eager).abs().max())
    if not diff <= ONNX_ATOL:
        raise ExportError(
            f"--onnx: onnxruntime logits differ from PyTorch by {diff:.3g} on the probe batch "
            f"(tolerance {ONNX_ATOL:g}); nothing written"
        )
    logger.info("ONNX parity: max logit difference %.3g", diff)
    return diff
