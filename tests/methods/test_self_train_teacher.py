"""A fixed teacher (self_train's teacher_run, distill's teacher): scored once into distill's cache with a
live forward's pseudo-labels and no forward per step, and hashed into the run record, so that verify
refuses a run whose teacher changed, naming its key."""

from __future__ import annotations

import math

import torch
import yaml
from test_self_train import LABELS, _prepared, save_teacher  # tests/methods is on sys.path (rootdir import)
from typer.testing import CliRunner

from robust_helpers import run_step, tiny_model, toy_batch
from toy_tasks import toy_rows, write_csv
from tunelab.cli import app
from tunelab.config import DataConfig
from tunelab.methods import distill, self_train
from tunelab.methods.distill import cache
from tunelab.methods.self_train.labels import pseudo_labels
from tunelab.models import manifest
from tunelab.models.run_info import read_run_info
from tunelab.reproduce import rerun_config


def test_fixed_teacher_scores_the_pool_once_with_a_live_forwards_pseudo_labels(
    tiny_backbone_dir, tmp_path, monkeypatch
):
    """Cached targets == a live forward's on the rows as training batches them; the teacher's forwards
    are the cache's fixed batches, none per training step."""
    pool = write_csv(tmp_path / "unlabeled.csv", toy_rows(40, seed=11))
    run = save_teacher(tiny_backbone_dir, tmp_path / "teacher-run")
    calls = []
    load = self_train.teachers.load_teacher

    def counted(path, key):
        teacher = load(path, key)
        teacher.register_forward_hook(lambda *_: calls.append(1))
        return teacher

    monkeypatch.setattr(self_train.teachers, "load_teacher", counted)
    model = tiny_model(tiny_backbone_dir, LABELS)
    adapted = _prepared(tiny_backbone_dir, model, pool, teacher_run=str(run))
    assert len(calls) == math.ceil(40 / cache.BATCH_ROWS)
    trainer = adapted.companions["self_train"]
    live = load(run, "live")
    confidence = trainer.cache.values.softmax(-1).max(-1).values.sort().values
    threshold = float(confidence[19] + confidence[20]) / 2  # keeps half of the rows
    kept = 0
    for start in range(0, 40, 8):  # every row, in training's order and padding
        clean, _ = trainer.batches(trainer.order(0)[start : start + 8], torch.device("cpu"))
        with torch.no_grad():
            expected = live(**clean).logits
        cached = trainer.cache.dense_logits(clean, len(LABELS))
        torch.testing.assert_close(cached, expected, rtol=1e-5, atol=1e-5)
        for multi_label in (False, True):
            ours = pseudo_labels(cached, threshold, multi_label)
            theirs = pseudo_labels(expected, threshold, multi_label)
            assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
        kept += int(pseudo_labels(cached, threshold, multi_label=False)[1].sum())
    assert kept == 20  # the threshold splits the rows, so equal keep masks say something
    batch = toy_batch(tiny_backbone_dir, 4, 2)
    for _ in range(4):  # 4 x 8 pseudo-labelled rows: a teacher run live would add 4 forwards
        out, _ = run_step(self_train.step, adapted, batch)
        assert torch.isfinite(out.loss)
    assert len(calls) == math.ceil(40 / cache.BATCH_ROWS)


def test_distill_teachers_are_recorded_as_model_dirs(tiny_backbone_dir, tmp_path):
    """A run dir and its best/ are one model: same key scheme, same hash, the path of best/."""
    run = save_teacher(tiny_backbone_dir, tmp_path / "teacher-run")
    data = DataConfig(train_file=write_csv(tmp_path / "train.csv", toy_rows(8, seed=2)))
    params = distill.Params(teacher=[str(run), str(run / "best")])
    files = manifest.data_files(data, [params])
    first, second = files["methods[0].params.teacher[0]"], files["methods[0].params.teacher[1]"]
    assert first == second
    assert first.path == str((run / "best").resolve())
    save_teacher(tiny_backbone_dir, run, seed=14)
    assert manifest.content_digest(run / "best").sha256 != first.sha256


def test_verify_refuses_a_run_whose_unlabeled_file_or_teacher_changed(tiny_backbone_dir, tmp_path):
    """The unlabelled file and the teacher_run (its best/, one sha256 of config and weights) are recorded,
    verify's re-run reads both from their recorded paths, and a change to either refuses verify before
    any training, naming its key."""
    teacher = save_teacher(tiny_backbone_dir, tmp_path / "teacher-run") / "best"
    pool = write_csv(tmp_path / "pool.csv", toy_rows(24, seed=5))
    params = {"unlabeled_file": str(pool), "teacher_run": str(teacher.parent), "temperature": 2.0}
    raw = {
        "model": {"name_or_path": str(tiny_backbone_dir)},
        "data": {
            "train_file": str(write_csv(tmp_path / "train.csv", toy_rows(16, seed=2))),
            "dev_file": str(write_csv(tmp_path / "dev.csv", toy_rows(8, seed=3))),
        },
        "task": {"params": {"max_length": 16}},
        "methods": [{"name": "self_train", "params": params}],
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "batch_size": 8},
    }
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert (trained := CliRunner().invoke(app, ["train", str(config)])).exit_code == 0, trained.output
    info = read_run_info(tmp_path / "run" / "best")
    assert info is not None
    recorded = {"unlabeled_file": pool.resolve(), "teacher_run": teacher.resolve()}
    (tmp_path / "again").mkdir()
    rerun = yaml.safe_load(rerun_config(info, tmp_path / "again").read_text())["methods"][0]["params"]
    for name, path in recorded.items():
        assert info.data_files[f"methods[0].params.{name}"].path == str(path)
        assert info.data_files[f"methods[0].params.{name}"].sha256 == manifest.content_digest(path).sha256
        assert rerun[name] == str(path)

    def refused(name: str) -> None:
        out = CliRunner().invoke(app, ["verify", str(tmp_path / "run")])
        assert out.exit_code == 1
        message = f"{recorded[name]}: methods[0].params.{name} changed since the run"
        assert message in " ".join(out.output.split())

    original = pool.read_bytes()
    pool.write_text(pool.read_text() + "one more unlabelled row,positive\n")
    refused("unlabeled_file")
    pool.write_bytes(original)
    save_teacher(tiny_backbone_dir, teacher.parent, seed=14)  # same config, other weights
    refused("teacher_run")
