"""Distillation: KD loss parity, cached == live teacher, cache keys, label checks, hidden matching."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoTokenizer, DataCollatorWithPadding

from robust_helpers import NO_DROPOUT, assert_same_grads, clone, run_step, tiny_model, toy_batch
from tunelab.errors import CheckpointError, ConfigError, DataError
from tunelab.methods import distill
from tunelab.methods.distill import cache as distill_cache
from tunelab.methods.losses import topk_kl
from tunelab.methods.spec import Adapted, RunData, default_step
from tunelab.models import manifest

LABELS = ["a", "b", "c", "d"]


def _teacher_dir(
    backbone: Path, tmp: Path, token_level: bool, labels=LABELS, seed: int = 11, peaked: bool = False
) -> Path:
    """A saved random teacher; ``peaked`` puts most of its probability mass on two labels."""
    torch.manual_seed(seed)
    out = tmp / f"teacher-{seed}-{'tok' if token_level else 'seq'}"
    model = tiny_model(backbone, labels, token_level)
    if peaked:
        with torch.no_grad():
            model.classifier.bias.copy_(torch.tensor([6.0, 3.0, -6.0, -6.0]))
    model.save_pretrained(out)
    return out


def _distilled(student, teacher_dirs, **params) -> Adapted:
    return distill.apply(student, distill.Params(teacher=[str(t) for t in teacher_dirs], **params), ())


@pytest.mark.parametrize("token_level", [False, True], ids=["seq", "token"])
def test_distill_alpha_one_equals_plain_cross_entropy(tiny_backbone_dir, tmp_path, token_level):
    teacher = _teacher_dir(tiny_backbone_dir, tmp_path, token_level)
    student = tiny_model(tiny_backbone_dir, LABELS, token_level, **NO_DROPOUT)
    batch = toy_batch(tiny_backbone_dir, 6, len(LABELS), token_level)
    plain, plain_grads = run_step(default_step, Adapted(model=clone(student)), batch)
    kd, kd_grads = run_step(distill.step, _distilled(student, [teacher], alpha=1.0), batch)
    torch.testing.assert_close(kd.loss, plain.loss)
    assert_same_grads(kd_grads, plain_grads)


def test_topk_kl_with_all_labels_equals_torch_kl_div():
    student, teacher = torch.randn(5, 4), torch.randn(5, 4)
    indices = torch.arange(4).expand(5, 4)
    ours = topk_kl(student, teacher, indices, 2.0, torch.ones(5, dtype=torch.bool))
    ref = F.kl_div(F.log_softmax(student / 2, -1), F.softmax(teacher / 2, -1), reduction="batchmean") * 4
    torch.testing.assert_close(ours, ref)


def test_topk_kl_token_level_ignores_masked_positions():
    student, teacher = torch.randn(2, 6, 3), torch.randn(2, 6, 3)
    mask = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 1, 1, 1, 1, 0]], dtype=torch.bool)
    indices = torch.arange(3).expand(2, 6, 3)
    ours = topk_kl(student, teacher, indices, 1.0, mask)
    ref = F.kl_div(F.log_softmax(student[mask], -1), F.softmax(teacher[mask], -1), reduction="batchmean")
    torch.testing.assert_close(ours, ref)
    noisy = student.clone()
    noisy[~mask] = 100.0
    torch.testing.assert_close(topk_kl(noisy, teacher, indices, 1.0, mask), ours)


def _features(backbone: Path, batch: dict) -> tuple[datasets.Dataset, DataCollatorWithPadding]:
    pairs = zip(batch["input_ids"], batch["attention_mask"], strict=True)
    rows = {"input_ids": [ids[m.bool()].tolist() for ids, m in pairs]}
    rows["attention_mask"] = [[1] * len(ids) for ids in rows["input_ids"]]
    return datasets.Dataset.from_dict(rows), DataCollatorWithPadding(AutoTokenizer.from_pretrained(backbone))


@pytest.mark.parametrize("token_level", [False, True], ids=["seq", "token"])
def test_cached_teacher_gives_the_live_teachers_loss(tiny_backbone_dir, tmp_path, token_level):
    """k = all labels: identical loss and gradients; k < labels: the top-k approximation stays close."""
    teacher = _teacher_dir(tiny_backbone_dir, tmp_path, token_level, peaked=True)
    student = tiny_model(tiny_backbone_dir, LABELS, token_level, **NO_DROPOUT)
    batch = toy_batch(tiny_backbone_dir, 6, len(LABELS), token_level)
    features, collator = _features(tiny_backbone_dir, batch)
    live, live_grads = run_step(distill.step, _distilled(clone(student), [teacher]), batch)

    results = {}
    for k in (4, 2):
        params = distill.Params(teacher=[str(teacher)], cache_dir=str(tmp_path / "cache"), cache_top_k=k)
        adapted = distill.apply(clone(student), params, ())
        distill.prepare(adapted, params, RunData(features, collator))
        assert len(adapted.companions["distill"].teachers) == 0  # the teacher is released
        results[k] = run_step(distill.step, adapted, batch)
    torch.testing.assert_close(results[4][0].loss, live.loss)
    assert_same_grads(results[4][1], live_grads)
    assert results[2][0].loss != live.loss
    assert results[2][0].loss == pytest.approx(float(live.loss), rel=0.1)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2


def test_cache_is_keyed_by_teacher_and_rows(tiny_backbone_dir, tmp_path):
    teacher = _teacher_dir(tiny_backbone_dir, tmp_path, False)
    other = _teacher_dir(tiny_backbone_dir, tmp_path, False, seed=12)
    rows = [[2, 5, 6, 3], [2, 7, 3]]
    fp = distill.teacher.fingerprint([teacher])
    base = distill_cache.cache_path(tmp_path, fp, rows, 4)
    assert distill_cache.cache_path(tmp_path, fp, rows, 4) == base
    assert distill_cache.cache_path(tmp_path, distill.teacher.fingerprint([other]), rows, 4) != base
    assert distill_cache.cache_path(tmp_path, fp, [[2, 5, 6, 3], [2, 8, 3]], 4) != base
    assert distill_cache.cache_path(tmp_path, fp, rows, 2) != base


def test_fingerprint_takes_the_digest_the_run_already_took(tiny_backbone_dir, tmp_path, monkeypatch):
    """The run record hashed the teacher (RunData.digests): the cache key reads no weights again."""
    teacher = _teacher_dir(tiny_backbone_dir, tmp_path, False)
    fresh = distill.teacher.fingerprint([teacher])
    known = {str(teacher.resolve()): manifest.content_digest(teacher).sha256}

    def no_rehash(path):
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(distill.teacher, "content_digest", no_rehash)
    assert distill.teacher.fingerprint([teacher], known) == fresh


def test_cache_refuses_rows_it_has_not_seen(tiny_backbone_dir, tmp_path):
    teacher = _teacher_dir(tiny_backbone_dir, tmp_path, False)
    params = distill.Params(teacher=[str(teacher)], cache_dir=str(tmp_path / "cache"))
    adapted = distill.apply(tiny_model(tiny_backbone_dir, LABELS), params, ())
    features = _features(tiny_backbone_dir, toy_batch(tiny_backbone_dir, 4, 4))
    distill.prepare(adapted, params, RunData(*features))
    unseen = toy_batch(tiny_backbone_dir, 4, 4, seed=99)
    with pytest.raises(DataError, match="not in the teacher cache"):
        distill.step(adapted, unseen, lambda loss: loss.backward())


def test_distill_refuses_a_teacher_with_other_labels(tiny_backbone_dir, tmp_path):
    teacher = _teacher_dir(tiny_backbone_dir, tmp_path, False, labels=["b", "a", "c", "d"])
    with pytest.raises(ConfigError, match=r"labels \['b', 'a', 'c', 'd'\] but the student has \['a', 'b'"):
        _distilled(tiny_model(tiny_backbone_dir, LABELS), [teacher])


def test_distill_checks_teacher_paths_and_param_combinations(tiny_backbone_dir, tmp_path):
    with pytest.raises(CheckpointError, match="teacher directory not found"):
        _distilled(tiny_model(tiny_backbone_dir, LABELS), [tmp_path / "missing"])
    with pytest.raises(ValueError, match="cache keeps logits only"):
        distill.Params(teacher=str(tmp_path), hidden_layers=[(1, 1)], cache_dir=str(tmp_path))


def test_ensemble_teacher_is_the_mean_of_its_members(tiny_backbone_dir, tmp_path):
    teachers = [_teacher_dir(tiny_backbone_dir, tmp_path, False, seed=s) for s in (11, 12)]
    batch = toy_batch(tiny_backbone_dir, 4, 4)
    adapted = _distilled(tiny_model(tiny_backbone_dir, LABELS), teachers)
    members = adapted.companions["distill"].teachers
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    expected = (members[0](**inputs).logits + members[1](**inputs).logits) / 2
    torch.testing.assert_close(adapted.companions["distill"].teacher_logits(batch), expected)


def test_hidden_matching_trains_a_projection_that_is_not_saved(tiny_backbone_dir, tmp_path):
    teacher = _teacher_dir(tiny_backbone_dir, tmp_path, False)
    student = tiny_model(tiny_backbone_dir, LABELS)
    adapted = _distilled(student, [teacher], hidden_layers=[(1, 1), (2, 2)], hidden_weight=1.0)
    out, grads = run_step(distill.step, adapted, toy_batch(tiny_backbone_dir, 4, 4))
    assert float(out.metrics["distill_hidden"]) > 0
    assert {n for n in grads if n.startswith("distill_projection.")} == {
        f"distill_projection.{i}.{w}" for i in (0, 1) for w in ("weight", "bias")
    }
    student.save_pretrained(tmp_path / "student")
    saved = load_file(tmp_path / "student" / "model.safetensors")
    assert not [k for k in saved if "distill_projection" in k]
    assert "classifier.weight" in saved


def test_lora_student_learns_from_the_teacher_through_its_adapters(tiny_backbone_dir, tmp_path):
    """[lora, distill]: the KD gradient reaches the LoRA weights and the projection, never frozen weights."""
    from peft import LoraConfig, get_peft_model

    teacher = _teacher_dir(tiny_backbone_dir, tmp_path, False)
    config = LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"])
    student = get_peft_model(tiny_model(tiny_backbone_dir, LABELS), config)
    adapted = _distilled(student, [teacher], alpha=0.0, hidden_layers=[(2, 2)])
    out, grads = run_step(distill.step, adapted, toy_batch(tiny_backbone_dir, 4, 4))
    assert float(out.metrics["distill_kd"]) > 0
    assert any("lora_A" in n for n in grads)
    assert any("distill_projection" in n for n in grads)
    frozen = {n for n, p in student.named_parameters() if not p.requires_grad}
    assert frozen
    assert not frozen & set(grads)
