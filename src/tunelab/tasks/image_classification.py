"""Image classification (e.g. Fashion-MNIST): a ViT, or another transformers image classifier.

Data are idx files (``assets.fashion_mnist.read_idx``): ``data.train_file`` names the images file, and
its labels file sits beside it under the same name with ``images-idx3`` read as ``labels-idx1``
(``t10k-images-idx3-ubyte.gz`` -> ``t10k-labels-idx1-ubyte.gz``). Label names come from
``task.params.labels``, else a ``labels.txt`` beside the images (``tunelab data prepare fashion-mnist``
writes one), else the label ids themselves.

The model's input processor is an image processor (``models.load.load_input_processor``) where text
tasks have a tokenizer: ``preprocess`` turns each image into ``pixel_values`` with it (converted to the
model's channels first, resized to its size), so training, ``tunelab predict`` and ``/v1/predict`` see
the same tensors. ``/v1/predict`` takes base64-encoded image files (PNG, JPEG...).

``from_scratch`` builds a random-init ViT (``models.scratch.init_vit``); ``image_mim`` pretrains the
same architecture with masked image modelling, and its ``best/`` is what this task then fine-tunes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from PIL import Image
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from transformers import AutoModelForImageClassification

from tunelab.assets.fashion_mnist import LABEL_NAMES_FILE, read_idx
from tunelab.config import DataConfig
from tunelab.data import Columns, TaskData, few_shot_rows
from tunelab.data.image_augment import random_crop_flip
from tunelab.data.images import decode_image, encode_png, image_array
from tunelab.data.splits import stratified_split, subsample
from tunelab.errors import DataError
from tunelab.models.scratch import init_vit
from tunelab.tasks.classification import metrics, predict_single_label
from tunelab.tasks.classification.schema import ClassificationResponse, classification_response
from tunelab.tasks.schemas import RequestBody, ServeSchema
from tunelab.tasks.spec import Batch, Features, TaskSpec


class ScratchParams(BaseModel):
    """The random-init ViT to build before training (``task.params.from_scratch``); image tasks share it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(default=28, gt=0, description="Images are resized to this many pixels a side.")
    patch_size: int = Field(
        default=4, gt=0, description="Pixels a side of one patch (token); divides image_size."
    )
    channels: int = Field(default=1, description="1 (grayscale) or 3 (RGB); images are converted to it.")
    hidden_size: int = Field(default=128, gt=0, description="Model width.")
    layers: int = Field(default=4, gt=0, description="Transformer layers.")
    heads: int = Field(default=4, gt=0, description="Attention heads; must divide hidden_size.")
    intermediate_size: int | None = Field(
        default=None, gt=0, description="Feed-forward width; default 4 * hidden_size."
    )
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout of attention and hidden states.")

    @model_validator(mode="after")
    def _shapes(self) -> ScratchParams:
        if self.hidden_size % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden_size ({self.hidden_size})")
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size ({self.patch_size}) must divide image_size ({self.image_size})")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {self.channels}")
        return self


class AugmentParams(BaseModel):
    """Training-time image edits (``task.params.augment``), redrawn for every training batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop_padding: int = Field(
        default=2,
        ge=0,
        le=64,  # bounded: np.pad allocates the padded image for every training image
        description="Random crop of the image zero-padded by this many pixels a side.",
    )
    flip: bool = Field(default=True, description="Mirror left-right with probability 0.5.")


class Params(BaseModel):
    """Options of the image_classification task (validated from ``task.params``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: list[str] | None = Field(
        default=None,
        min_length=2,
        description="Names of label ids 0, 1, ...; default: labels.txt beside the images, else the ids.",
    )
    from_scratch: ScratchParams | None = Field(
        default=None,
        description="Build a random-init ViT first (model.name_or_path must be 'scratch').",
    )
    augment: AugmentParams | None = Field(
        default=None, description="Augment training images (random crop, flip); null = off."
    )


def labels_path(images: Path) -> Path:
    """The idx labels file that goes with an idx images file (``images-idx3`` -> ``labels-idx1``)."""
    return images.with_name(images.name.replace("images-idx3", "labels-idx1"))


def read_images(path: Path) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) uint8 images of an idx file; anything else is a DataError."""
    images = read_idx(path)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DataError(f"{path}: expected uint8 images (N, H, W[, C]), got {images.dtype} {images.shape}")
    return images


def label_names(images: Path, given: Sequence[str] | None, ids: np.ndarray) -> list[str]:
    """``given``, else ``labels.txt`` beside the images, else the ids 0..max as strings."""
    names_file = images.with_name(LABEL_NAMES_FILE)
    if given is not None:
        names = list(given)
    elif names_file.is_file():
        names = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        names = [str(i) for i in range(int(ids.max(initial=0)) + 1)]
    return names


def read_labelled(path: Path, names: Sequence[str] | None) -> tuple[np.ndarray, list[str], list[str]]:
    """(images, label name per image, label names in id order) of an idx images file and its labels."""
    images, labels_file = read_images(path), labels_path(path)
    if labels_file == path or not labels_file.is_file():
        raise DataError(
            f"{path}: no labels file {labels_file.name} beside it (idx images-idx3/labels-idx1 pair)"
        )
    ids = read_idx(labels_file).astype(np.int64)
    if ids.shape != (len(images),):
        raise DataError(f"{labels_file}: {ids.shape} labels for {len(images)} images in {path.name}")
    names = label_names(path, names, ids)
    bad = np.flatnonzero((ids < 0) | (ids >= len(names)))
    if len(bad):
        raise DataError(
            f"{labels_file}: image {int(bad[0])} has label id {int(ids[bad[0]])}, outside the "
            f"{len(names)} label names; set task.params.labels"
        )
    return images, [names[i] for i in ids], names


def image_dataset(images: np.ndarray, labels: list[str] | None, rows: Sequence[int]) -> Any:
    """Examples whose ``image`` is an encoded image file (PNG here), as requests send them.

    Bytes rather than pixel lists: ``datasets`` stores and hashes a binary column in milliseconds,
    nested lists of 60k images in minutes.
    """
    import datasets

    columns: dict[str, Any] = {"image": [encode_png(images[i]) for i in rows]}
    if labels is not None:
        columns["label"] = [labels[i] for i in rows]
    return datasets.Dataset.from_dict(columns)


def load_image_data(cfg: DataConfig, names: Sequence[str] | None, seed: int, labelled: bool) -> TaskData:
    """Train/dev/test image splits from idx files: dev split off train when no dev_file, subsampled as set.

    ``labelled`` reads each images file's labels file too (stratified dev split, ``k_shot``); without
    it the images are all there is (masked image modelling), and the labels list is empty.
    """
    if labelled:
        train, train_labels, label_list = read_labelled(cfg.train_file, names)
    else:
        train, train_labels, label_list = read_images(cfg.train_file), None, []

    def read(path: Path | None) -> tuple[np.ndarray, list[str] | None] | None:
        if path is None:
            return None
        return read_labelled(path, label_list)[:2] if labelled else (read_images(path), None)

    dev, test = read(cfg.dev_file), read(cfg.test_file)
    keys = train_labels or ["image"] * len(train)
    if dev is None:
        train_rows, dev_rows = stratified_split(keys, cfg.dev_ratio, seed)
        dev = (train, train_labels)
    else:
        train_rows, dev_rows = list(range(len(train))), list(range(len(dev[0])))
    pick = subsample(len(train_rows), cfg.max_train_samples, seed)
    if cfg.k_shot is not None:
        pick = few_shot_rows([keys[i] for i in train_rows], cfg.k_shot, seed)
    dev_pick = subsample(len(dev_rows), cfg.max_eval_samples, seed)
    return TaskData(
        train=image_dataset(train, train_labels, [train_rows[i] for i in pick]),
        dev=image_dataset(dev[0], dev[1], [dev_rows[i] for i in dev_pick]),
        test=image_dataset(*test, subsample(len(test[0]), cfg.max_eval_samples, seed)) if test else None,
        labels=label_list,
    )


def load_data(cfg: DataConfig, params: Params, seed: int) -> TaskData:
    """Labelled idx image splits (see ``load_image_data``)."""
    return load_image_data(cfg, params.labels, seed, labelled=True)


def read_eval(path: Path, columns: Columns, params: Params, labels: Sequence[str]) -> Any:
    """One labelled idx images file (its labels file beside it), for ``tunelab eval``."""
    images, names, _ = read_labelled(path, labels)
    return image_dataset(images, names, range(len(images)))


def image_file_records(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Prediction records of image files: ``image`` (the file's bytes) and ``source`` (its path)."""
    records = []
    for path in paths:
        try:
            raw = path.read_bytes()
            image_array(raw)
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror})") from None
        except ValueError as exc:
            raise DataError(f"{path}: {exc}") from None
        records.append({"image": raw, "source": str(path)})
    return records


def idx_records(path: Path) -> list[dict[str, Any]]:
    """Prediction records of an idx images file: each image as PNG bytes, ``source`` ``file[index]``."""
    return [
        {"image": encode_png(image), "source": f"{path}[{i}]"} for i, image in enumerate(read_images(path))
    ]


def _check_image(data: str) -> str:
    decode_image(data)
    return data


Base64Image = Annotated[
    str, AfterValidator(_check_image), Field(description="An image file (PNG, JPEG...), base64-encoded.")
]


class ImagesRequest(RequestBody):
    """``/v1/predict`` of an image task: one base64-encoded image file or a list."""

    inputs: Base64Image | Annotated[list[Base64Image], Field(min_length=1)] = Field(
        description="One base64-encoded image file or a list of them."
    )


def image_records(body: ImagesRequest) -> list[dict[str, Any]]:
    """``inputs`` (validated base64 images) -> raw image records ``{"image": image file bytes}``."""
    images = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    return [{"image": base64.b64decode(image)} for image in images]


def in_channels(raw: bytes, channels: int) -> np.ndarray:
    """An encoded image file -> uint8 (H, W, channels) pixels, grayscale (1) or RGB (3).

    An image already in those channels is not converted (a copy per image saved).
    """
    pixels = image_array(raw)  # (H, W) grayscale or (H, W, 3) RGB
    if (pixels.ndim == 2) != (channels == 1):
        pixels = np.asarray(Image.fromarray(pixels).convert("L" if channels == 1 else "RGB"))
    return pixels[..., None] if pixels.ndim == 2 else pixels


def decode_pixels(images: Sequence[bytes], processor: Any) -> list[np.ndarray]:
    """Encoded image files -> uint8 (H, W, C) arrays in the model's channels (one per ``image_mean``)."""
    return [in_channels(raw, len(processor.image_mean)) for raw in images]


def model_inputs(pixels: Sequence[np.ndarray], processor: Any) -> np.ndarray:
    """uint8 (H, W, C) arrays -> the model's (N, C, H, W) float32 inputs (resized, rescaled, normalised).

    Images already at the processor's size skip its resize, which would copy them through PIL one at a
    time: most of a small-image batch's preprocessing time, for an identical result.
    """
    size = processor.size or {}  # {"height", "width"}, or e.g. {"shortest_edge"}: then always resize
    resize = any(p.shape[:2] != (size.get("height"), size.get("width")) for p in pixels)
    out = processor(list(pixels), input_data_format="channels_last", return_tensors="np", do_resize=resize)[
        "pixel_values"
    ]
    return np.asarray(out, dtype=np.float32)


def pixel_values(images: Sequence[bytes], processor: Any) -> np.ndarray:
    """Encoded image files -> the model's (N, C, H, W) float32 inputs."""
    return model_inputs(decode_pixels(images, processor), processor)


def preprocess(batch: Batch, processor: Any, params: Any, label2id: Mapping[str, int]) -> Features:
    """Images stay encoded (the collator decodes a batch at a time); labels become ids."""
    out: Features = {"image": list(batch["image"])}
    if "label" in batch:
        out["labels"] = [label2id[label] for label in batch["label"]]
    return out


def collator(processor: Any, params: Any, augment: AugmentParams | None = None) -> Any:
    """Decode a batch's images into ``pixel_values`` (with ``labels`` when present); other columns drop.

    Decoding here rather than in ``preprocess`` is what a tokenizer does for text the other way round:
    the features stay a few hundred bytes per image and the image processor runs on ~100 images at a
    time (milliseconds), never over a whole split at once. ``augment`` edits the decoded images first,
    from a generator seeded by torch's global RNG (which checkpoints save, so a resumed run redraws
    the edits the uninterrupted one would).
    """

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pixels = decode_pixels([r["image"] for r in rows], processor)
        if augment is not None:
            rng = np.random.default_rng(int(torch.randint(2**62, ())))
            pixels = random_crop_flip(pixels, augment.crop_padding, augment.flip, rng)
        batch = {"pixel_values": torch.from_numpy(model_inputs(pixels, processor))}
        if "labels" in rows[0]:
            batch["labels"] = torch.tensor([r["labels"] for r in rows])
        return batch

    return collate


def train_collator(processor: Any, params: Params) -> Any:
    """Training batches: ``collator``'s, with ``params.augment``'s edits when set."""
    return collator(processor, params, params.augment)


def count_images(batch: Mapping[str, torch.Tensor], params: Any) -> torch.Tensor:
    """Targets of an image-level task: one per image."""
    return torch.tensor(len(batch["pixel_values"]))


def image_statistics(images: Sequence[bytes], channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] of encoded training images, converted to ``channels``."""
    sums, squares, count = np.zeros(channels), np.zeros(channels), 0
    for raw in images:
        pixels = in_channels(raw, channels).reshape(-1, channels).astype(np.float64) / 255
        sums, squares, count = sums + pixels.sum(0), squares + (pixels**2).sum(0), count + len(pixels)
    mean = sums / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - mean**2, 1e-12))
    return mean.tolist(), std.tolist()


def from_scratch(params: Any) -> bool:
    """Whether the run builds its own random-init ViT (``from_scratch`` set)."""
    return params.from_scratch is not None


def init_model(params: Any, data: TaskData, base: Path, dest: Path, seed: int) -> Path:
    """A from-scratch run's start: a random-init ViT normalising by the train images' statistics."""
    if params.from_scratch is None:
        return base
    mean, std = image_statistics(data.train["image"], params.from_scratch.channels)
    return init_vit(params.from_scratch, mean, std, dest, seed)


TASK = TaskSpec(
    name="image_classification",
    params=Params,
    model_class=AutoModelForImageClassification,
    head_modules=("classifier",),
    metric_names=("accuracy", "macro_f1", "micro_f1"),
    load_data=load_data,
    read_eval=read_eval,
    preprocess=preprocess,
    collator=collator,
    train_collator=train_collator,
    postprocess=predict_single_label,
    metrics=metrics,
    input_fields=("image",),
    count_targets=count_images,
    from_scratch=from_scratch,
    init_model=init_model,
    few_shot=True,
    serve_schema=ServeSchema(ImagesRequest, image_records, ClassificationResponse, classification_response),
    hf_architecture="ForImageClassification",
    pipeline_tag="image-classification",
)
