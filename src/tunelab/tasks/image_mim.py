"""Masked image modelling (SimMIM, Xie et al. 2022): pretrain a ViT on unlabelled images.

A random ``mask_ratio`` of each image's patches is replaced by a learned mask token, and a one-layer
head (transformers' ``ViTForMaskedImageModeling``: a 1x1 convolution and a pixel shuffle) predicts
their raw pixels; the loss is the L1 distance over the masked pixels only. Masks are drawn anew every
time a batch is built (as ``lm_pretrain`` masks tokens), from a fixed seed at evaluation so dev
losses compare across evaluations.

Data are idx image files as in ``image_classification`` (labels, if any, are not read). A from-scratch
run (``model.name_or_path: scratch`` with ``task.params.from_scratch``) builds the ViT and an image
processor normalising by the training images' statistics (``models.scratch.init_vit``); the saved
``best/`` is a plain Hugging Face directory that ``image_classification`` fine-tunes directly (the
decoder is dropped, a fresh classifier head is added).

``tunelab predict`` and ``/v1/predict`` (base64 images, as ``image_classification``) report each
image's reconstruction loss under a mask seeded by the image's own bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import AutoModelForMaskedImageModeling

from tunelab.config import DataConfig
from tunelab.data import Columns, TaskData
from tunelab.errors import ConfigError
from tunelab.tasks.image_classification import (
    ImagesRequest,
    ScratchParams,
    from_scratch,
    image_dataset,
    image_records,
    init_model,
    pixel_values,
    preprocess,
    read_images,
)
from tunelab.tasks.image_classification import load_image_data as _load_image_data
from tunelab.tasks.schemas import ServeSchema
from tunelab.tasks.spec import Batch, Features, Predicted, TaskSpec


class Params(BaseModel):
    """Options of the image_mim task (validated from ``task.params``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mask_ratio: float = Field(
        default=0.6, gt=0, lt=1, description="Share of each image's patches masked (SimMIM's default 0.6)."
    )
    patch_size: int = Field(
        default=4, gt=0, description="The model's patch size in pixels; masks cover whole patches."
    )
    from_scratch: ScratchParams | None = Field(
        default=None, description="Build a random-init ViT first (model.name_or_path must be 'scratch')."
    )

    @model_validator(mode="after")
    def _same_patches(self) -> Params:
        if self.from_scratch is not None and self.from_scratch.patch_size != self.patch_size:
            raise ValueError(
                f"from_scratch.patch_size ({self.from_scratch.patch_size}) must equal "
                f"patch_size ({self.patch_size})"
            )
        return self


def load_data(cfg: DataConfig, params: Params, seed: int) -> TaskData:
    """Unlabelled idx image splits (labels files are not read); dev split off train when no dev_file."""
    return _load_image_data(cfg, None, seed, labelled=False)


def read_eval(path: Path, columns: Columns, params: Params, labels: Sequence[str]) -> Any:
    """One idx images file to score (``tunelab eval``)."""
    images = read_images(path)
    return image_dataset(images, None, range(len(images)))


def predict_preprocess(batch: Batch, processor: Any, params: Params) -> Features:
    """Prediction records keep their image and get a mask seed of their own (crc32 of the image's bytes).

    So an image is masked, and scored, the same in any batch: the CLI's and the server's micro-batches.
    """
    return {"image": list(batch["image"]), "mask_seed": [zlib.crc32(image) for image in batch["image"]]}


def _mask(n: int, patches: int, masked: int, generator: torch.Generator | None) -> torch.Tensor:
    """(n, patches) bool: ``masked`` random patches per row set."""
    order = torch.rand(n, patches, generator=generator).argsort(dim=1)
    return torch.zeros(n, patches, dtype=torch.bool).scatter_(1, order[:, :masked], True)


def collator(processor: Any, params: Params, seed: int | None = None) -> Any:
    """``pixel_values`` and a random patch mask ``bool_masked_pos`` (B, patches) per batch.

    ``seed=None`` draws from torch's global RNG (which training checkpoints save, so a resumed run
    masks as the uninterrupted one would); evaluation forks that RNG from a fixed seed. Prediction rows
    (``predict_preprocess``) are masked from their own ``mask_seed``. Every image gets exactly
    round(mask_ratio * patches) masked patches.
    """
    generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pixels = torch.from_numpy(pixel_values([r["image"] for r in rows], processor))  # (B, C, H, W)
        patches = (pixels.shape[-2] // params.patch_size) * (pixels.shape[-1] // params.patch_size)
        masked = round(params.mask_ratio * patches)
        if "mask_seed" in rows[0]:
            seeded = [torch.Generator().manual_seed(r["mask_seed"]) for r in rows]
            mask = torch.cat([_mask(1, patches, masked, g) for g in seeded])
        else:
            mask = _mask(len(rows), patches, masked, generator)
        return {"pixel_values": pixels, "bool_masked_pos": mask}

    return collate


def masked_l1(outputs: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per image: summed L1 error over its masked pixels and their count (channels averaged), (B,) each.

    The same loss ``ViTForMaskedImageModeling`` trains with, kept per image so the dev loss is the
    exact mean over every masked pixel of the split. Images are square (ViT's ``image_size``).
    """
    pixels, mask = batch["pixel_values"], batch["bool_masked_pos"]  # (B, C, H, W), (B, P)
    side = pixels.shape[-1] // int(mask.shape[1] ** 0.5)  # pixels a side of one patch
    grid = mask.reshape(len(mask), 1, pixels.shape[-2] // side, pixels.shape[-1] // side).float()
    pixel_mask = grid.repeat_interleave(side, 2).repeat_interleave(side, 3)  # (B, 1, H, W)
    error = (outputs.reconstruction.float() - pixels.float()).abs().mean(dim=1, keepdim=True) * pixel_mask
    return {"l1_sum": error.sum(dim=(1, 2, 3)), "n_pixels": pixel_mask.sum(dim=(1, 2, 3))}


def loss_terms(outputs: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed masked-pixel L1, masked pixels) of a batch: the eval loss is the mean over the split."""
    rows = masked_l1(outputs, batch)
    return rows["l1_sum"].sum(), rows["n_pixels"].sum()


def count_targets(batch: Mapping[str, torch.Tensor], params: Params) -> torch.Tensor:
    """Masked pixels of the batch, the targets the model's loss averages over."""
    pixels, mask = batch["pixel_values"], batch["bool_masked_pos"]
    return mask.sum() * (pixels.shape[-2] * pixels.shape[-1] // mask.shape[1])


def check_model(config: Any, params: Params) -> None:
    """The masks are drawn per patch: ``patch_size`` must be the model's, on square images."""
    if (
        getattr(config, "patch_size", None) != params.patch_size
        or getattr(config, "encoder_stride", None) is None
    ):
        raise ConfigError(
            f"task.params.patch_size: {params.patch_size} does not fit a {config.model_type} model with "
            f"patch_size {getattr(config, 'patch_size', None)}; image_mim trains ViT-style masked image "
            "models"
        )


def metrics(predicted: Predicted) -> dict[str, Any]:
    """``reconstruction_loss``: mean L1 error per masked pixel (normalised units) over the split."""
    total = float(predicted.arrays["l1_sum"].astype(np.float64).sum())
    count = float(predicted.arrays["n_pixels"].astype(np.float64).sum())
    return {"reconstruction_loss": total / max(count, 1.0), "masked_pixels": int(count)}


def postprocess(predicted: Predicted) -> list[dict[str, Any]]:
    """Per image: its reconstruction loss under its own mask (``predict_preprocess``)."""
    sums, counts = predicted.arrays["l1_sum"], predicted.arrays["n_pixels"]
    return [{"reconstruction_loss": float(s) / max(float(n), 1.0)} for s, n in zip(sums, counts, strict=True)]


class MIMPrediction(BaseModel):
    """One image's masked-image-modelling score."""

    reconstruction_loss: float = Field(description="Mean L1 error per masked pixel (normalised units).")


class MIMResponse(BaseModel):
    """``/v1/predict`` response of a masked-image model: the model id and one score per image."""

    model: str
    predictions: list[MIMPrediction] = Field(description="One per input, in input order.")


def mim_response(model: str, predictions: Sequence[dict[str, Any]]) -> MIMResponse:
    """Map image_mim's postprocess output to the response schema."""
    return MIMResponse(model=model, predictions=[MIMPrediction.model_validate(p) for p in predictions])


TASK = TaskSpec(
    name="image_mim",
    params=Params,
    model_class=AutoModelForMaskedImageModeling,
    head_modules=(),
    metric_names=("reconstruction_loss",),
    load_data=load_data,
    read_eval=read_eval,
    preprocess=preprocess,
    collator=collator,
    postprocess=postprocess,
    metrics=metrics,
    input_fields=("image",),
    outputs=masked_l1,
    loss_terms=loss_terms,
    target_keys=(),
    count_targets=count_targets,
    check_model=check_model,
    from_scratch=from_scratch,
    init_model=init_model,
    predict_preprocess=predict_preprocess,
    serve_schema=ServeSchema(ImagesRequest, image_records, MIMResponse, mim_response),
    why_no_logits="its model outputs reconstructed pixels, not logits",
)
