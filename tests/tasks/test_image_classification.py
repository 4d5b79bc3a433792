"""image_classification: idx reading, learning toy images, save/load, base64 serving, int8 export."""

from __future__ import annotations

import base64
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from PIL import Image

from served_models import close, serve
from toy_tasks import image_classification as toy_images_task
from toy_tasks import tiny_vit_dir, toy_images, toy_run_config, write_idx
from tunelab.assets import DatasetAsset, dataset_dir
from tunelab.assets.fashion_mnist import DEBIAN_DIR, read_idx
from tunelab.data.images import encode_png
from tunelab.errors import AssetError, DataError
from tunelab.evaluation import evaluate
from tunelab.export.pipeline import ExportOptions, export_model
from tunelab.inference.artifact import load_artifact
from tunelab.inference.predict import predict_records
from tunelab.models.artifact import save_model
from tunelab.models.load import load_input_processor
from tunelab.tasks.image_classification import (
    TASK,
    AugmentParams,
    Params,
    idx_records,
    image_statistics,
    pixel_values,
)
from tunelab.training import prepare_inputs, resolve, train
from tunelab.workflows import run_info


def test_idx_reader_reads_a_generated_file_exactly(tmp_path: Path):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 3, 4), dtype=np.uint8)
    raw = write_idx(tmp_path / "x-images-idx3-ubyte", images)
    (tmp_path / "x.gz").write_bytes(gzip.compress(raw.read_bytes()))
    wide = np.arange(-6, 6, dtype=">i4").reshape(3, 4)  # big-endian int32: dtype code 0x0C
    header = bytes([0, 0, 0x0C, 2]) + np.asarray(wide.shape, ">u4").tobytes()
    (tmp_path / "wide").write_bytes(header + wide.tobytes())

    np.testing.assert_array_equal(read_idx(raw), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "wide"), wide)
    (tmp_path / "short").write_bytes(raw.read_bytes()[:-1])
    with pytest.raises(DataError, match="header says shape"):
        read_idx(tmp_path / "short")


def test_missing_fashion_mnist_names_the_debian_package(tmp_path: Path):
    with pytest.raises(DataError, match="install the Debian package dataset-fashion-mnist"):
        read_idx(DEBIAN_DIR / "no-such-images-idx3-ubyte.gz")
    asset = DatasetAsset(
        "dataset-fashion-mnist", "", "MIT", lambda src, out: {}, system_dir=tmp_path / "gone"
    )
    with pytest.raises(AssetError, match="apt-get install dataset-fashion-mnist"):
        dataset_dir(asset)


def test_learns_toy_images_and_round_trips_through_save_load_predict(tiny_backbone_dir, tmp_path: Path):
    sections = toy_images_task(tmp_path)
    cfg = toy_run_config(
        tiny_backbone_dir,
        sections,
        [{"name": "full"}],
        tmp_path / "run",
        max_steps=None,
        num_train_epochs=4,
        lr=3e-3,
    )
    plan = resolve(cfg)
    inputs = prepare_inputs(plan)

    def score(model):
        return evaluate(model, TASK, inputs.dev, inputs.collator, inputs.labels, 16)

    train(plan, inputs, Accelerator(cpu=True), evaluate=score)
    assert score(inputs.adapted.model)["accuracy"] >= 0.9  # chance is 0.5

    save_model(inputs.adapted.model, inputs.tokenizer, tmp_path / "best", run_info(plan, inputs))
    art = load_artifact(tmp_path / "best")
    records = idx_records(Path(sections["data"]["dev_file"]))
    loaded = predict_records(art, records, batch_size=5)
    art.model = inputs.adapted.model.eval()
    close(loaded, predict_records(art, records, batch_size=16))
    assert {p["label"] for p in loaded} == {"dark", "bright"}


@pytest.fixture(scope="module")
def saved_classifier(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path) -> Path:
    tmp = tmp_path_factory.mktemp("image-cls")
    cfg = toy_run_config(
        tiny_backbone_dir, toy_images_task(tmp), [{"name": "full"}], tmp / "run", max_steps=3
    )
    plan = resolve(cfg)
    inputs = prepare_inputs(plan)
    train(plan, inputs, Accelerator(cpu=True))
    save_model(inputs.adapted.model, inputs.tokenizer, tmp / "best", run_info(plan, inputs))
    return tmp / "best"


def test_served_base64_png_answers_as_predict_and_bad_inputs_are_422(saved_classifier: Path):
    art = load_artifact(saved_classifier)
    pngs = [encode_png(image) for image in toy_images(2, seed=9)[0]]
    want = predict_records(art, [{"image": png} for png in pngs], batch_size=2)
    with serve(saved_classifier) as client:
        got = client.post("/v1/predict", json={"inputs": [base64.b64encode(p).decode() for p in pngs]})
        assert got.status_code == 200, got.text
        for prediction, reference in zip(got.json()["predictions"], want, strict=True):
            assert prediction["label"] == reference["label"]
            assert prediction["score"] == pytest.approx(
                reference["probabilities"][reference["label"]], abs=1e-6
            )
        bad = client.post("/v1/predict", json={"inputs": "not base64 at all!"})
        assert bad.status_code == 422
        assert "not valid base64" in bad.text
        not_image = client.post("/v1/predict", json={"inputs": [base64.b64encode(b"plain text").decode()]})
        assert not_image.status_code == 422
        assert "not a readable image" in not_image.text


def test_int8_export_keeps_predictions(saved_classifier: Path, tmp_path: Path):
    export = export_model(
        saved_classifier, tmp_path / "int8", ExportOptions(quantize="int8", latency_repeats=1)
    )
    assert export.parity is not None
    assert export.parity["after"]["size_mb"] < export.parity["before"]["size_mb"]
    records = [{"image": encode_png(image)} for image in toy_images(8, seed=11)[0]]
    fp32 = predict_records(load_artifact(saved_classifier), records, batch_size=8)
    int8 = predict_records(load_artifact(tmp_path / "int8"), records, batch_size=8)
    assert [p["label"] for p in int8] == [p["label"] for p in fp32]
    for a, b in zip(int8, fp32, strict=True):
        for label, prob in b["probabilities"].items():
            assert a["probabilities"][label] == pytest.approx(prob, abs=0.02)


def _rows(n: int) -> list[dict]:
    return [{"image": encode_png(image), "labels": 0} for image in toy_images(n, seed=4)[0]]


def test_train_collator_augments_training_batches_reproducibly_and_eval_batches_never():
    processor = load_input_processor(tiny_vit_dir())
    rows = _rows(16)
    plain = TASK.collator(processor, Params())(rows)["pixel_values"]
    assert torch.equal(TASK.train_collator(processor, Params())(rows)["pixel_values"], plain)
    augmented = Params(augment=AugmentParams(crop_padding=2, flip=True))
    edit = TASK.train_collator(processor, augmented)
    torch.manual_seed(3)
    first = edit(rows)
    torch.manual_seed(3)
    again = edit(rows)["pixel_values"]
    assert torch.equal(first["pixel_values"], again)  # drawn from torch's RNG, which checkpoints save
    assert first["pixel_values"].shape == plain.shape
    assert torch.equal(first["labels"], torch.zeros(16, dtype=torch.long))
    changed = (first["pixel_values"] != plain).flatten(1).any(1)
    assert changed.sum() >= 14  # 1 in 50 draws leaves an image as it was
    assert torch.equal(TASK.collator(processor, augmented)(rows)["pixel_values"], plain)  # dev / test
    with pytest.raises(ValueError, match="crop_padding"):  # np.pad would allocate it for every image
        AugmentParams(crop_padding=10_000)


def test_images_at_the_model_size_skip_the_resize_with_identical_inputs():
    processor = load_input_processor(tiny_vit_dir())
    images = [raw["image"] for raw in _rows(4)]
    pixels = [np.asarray(image)[..., None] for image in toy_images(4, seed=4)[0]]
    resized = processor(pixels, input_data_format="channels_last", return_tensors="np", do_resize=True)
    np.testing.assert_array_equal(pixel_values(images, processor), resized["pixel_values"])
    larger = encode_png(np.full((12, 12), 200, dtype=np.uint8))
    assert pixel_values([larger], processor).shape == (1, 1, 8, 8)  # other sizes are still resized


@pytest.mark.parametrize("channels", [1, 3])
def test_image_statistics_read_each_image_in_the_models_channels(channels: int):
    rgb = np.random.default_rng(0).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    images = [encode_png(image) for image in rgb]
    pixels = rgb if channels == 3 else np.stack([np.asarray(Image.fromarray(i).convert("L")) for i in rgb])
    mean, std = image_statistics(images, channels)
    flat = pixels.reshape(-1, channels) / 255
    np.testing.assert_allclose(mean, flat.mean(0))
    np.testing.assert_allclose(std, flat.std(0), rtol=1e-6)
