"""Self-training: nothing confident is the default step; pseudo-labels are the teacher's confident argmax
or its tempered distribution (a fixed teacher_run's KL); the model's own teacher follows its schedule; an
interrupted run resumes with identical losses; a toy task is learnt."""

from __future__ import annotations

import json
import os
import signal
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, DataCollatorWithPadding

from robust_helpers import NO_DROPOUT, assert_same_grads, clone, run_step, tiny_model, toy_batch
from toy_tasks import toy_rows, write_csv
from tunelab.data import Columns, load_inputs
from tunelab.errors import ConfigError, DataError
from tunelab.evaluation import evaluate
from tunelab.methods import self_train
from tunelab.methods.self_train import labels
from tunelab.methods.spec import Adapted, OptimizerStepContext, RunData, default_step
from tunelab.training import build_accelerator, prepare_inputs, resolve, train

LABELS = ["negative", "positive"]


def _prepared(backbone: Path, model, unlabeled: Path, **params) -> Adapted:
    """``self_train`` applied to ``model`` and prepared on ``unlabeled`` as the training setup does it."""
    tok = AutoTokenizer.from_pretrained(backbone)
    schedule = {} if "teacher_run" in params else {"warm_start": 0.0}
    p = self_train.Params(unlabeled_file=unlabeled, **(schedule | params))
    adapted = self_train.apply(model, p, ())

    def tokenize(columns):
        return dict(tok(columns["text"], truncation=True, max_length=32))

    data = RunData(
        None, DataCollatorWithPadding(tok), 7, partial(load_inputs, columns=Columns("text")), tokenize
    )
    self_train.prepare(adapted, p, data)
    return adapted


@pytest.fixture
def unlabeled(tmp_path) -> Path:
    """Toy texts with a label column the method must ignore."""
    return write_csv(tmp_path / "unlabeled.csv", toy_rows(40, seed=11))


def save_teacher(backbone: Path, run: Path, seed: int = 13) -> Path:
    """A finished run's layout: a saved tiny classifier (40 x a random head) in best/."""
    torch.manual_seed(seed)
    model = tiny_model(backbone, LABELS, **NO_DROPOUT)
    with torch.no_grad():
        model.classifier.weight.mul_(40.0)
    model.save_pretrained(run / "best")
    return run


@pytest.fixture
def teacher_run(tiny_backbone_dir, tmp_path) -> Path:
    """A teacher saved as a run's best/."""
    return save_teacher(tiny_backbone_dir, tmp_path / "teacher-run")


def test_threshold_one_gives_exactly_the_default_step(tiny_backbone_dir, unlabeled):
    """Nothing is confident: same loss and gradients as the default step, dropout draws included."""
    model = tiny_model(tiny_backbone_dir, LABELS)
    batch = toy_batch(tiny_backbone_dir, 6, 2)
    torch.manual_seed(3)
    plain, plain_grads = run_step(default_step, Adapted(model=clone(model)), batch)
    adapted = _prepared(tiny_backbone_dir, model, unlabeled, threshold=1.0)
    torch.manual_seed(3)
    out, grads = run_step(self_train.step, adapted, batch)
    assert torch.equal(out.loss, plain.loss)
    assert float(out.metrics["self_train_kept"]) == 0.0
    assert_same_grads(grads, plain_grads, atol=0.0)
    assert adapted.companions["self_train"].position.tolist() == [0, 12]  # ratio 2 x 6 rows drawn


def test_pseudo_labels_are_the_argmax_kept_above_the_threshold():
    logits = torch.tensor([[2.0, 0.0], [0.1, 0.0], [0.0, 3.0]])  # softmax max: 0.88, 0.52, 0.95
    targets, keep = labels.pseudo_labels(logits, 0.8, multi_label=False)
    assert targets.tolist() == [0, 0, 1]
    assert keep.tolist() == [True, False, True]
    targets, keep = labels.pseudo_labels(torch.tensor([[3.0, -0.1], [-3.0, 0.2]]), 0.9, multi_label=True)
    assert targets.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert keep.tolist() == [[True, False], [True, False]]


def test_class_fraction_keeps_each_classs_most_confident_rows():
    """Quota ceil(0.5 x 6 rows / 2 classes) = 2 per predicted class, most confident first, above the
    threshold; class 1 has one row only, so the quota does not move a row to class 0."""
    logits = torch.tensor([[1.0, 0], [3, 0], [2, 0], [0, 2.5], [4, 0], [0.05, 0]])
    targets, keep = labels.pseudo_labels(logits, 0.55, multi_label=False, class_fraction=0.5)
    assert targets.tolist() == [0, 0, 0, 1, 0, 0]
    assert keep.tolist() == [False, True, False, True, True, False]  # class 0: margins 4 and 3 of 4, 3, 2, 1
    _, keep = labels.pseudo_labels(logits, 0.55, multi_label=False)
    assert keep.tolist() == [True, True, True, True, True, False]  # no quota: the threshold alone
    _, keep = labels.pseudo_labels(logits, 0.94, multi_label=False, class_fraction=0.5)
    assert keep.tolist() == [False, True, False, False, True, False]  # the threshold still applies (0.92)
    # multi-label: per label, its predicted 1s and 0s each keep ceil(0.5 x 4 / 2) = 1
    multi = torch.tensor([[3.0, -1], [2, -4], [-1, 1], [-2, 0.5]])
    targets, keep = labels.pseudo_labels(multi, 0.5, multi_label=True, class_fraction=0.5)
    assert targets.tolist() == [[1, 0], [1, 0], [0, 1], [0, 1]]
    assert keep.tolist() == [[True, False], [False, True], [False, True], [True, False]]


def test_step_trains_on_the_teachers_confident_rows_only(tiny_backbone_dir, unlabeled):
    """loss = labelled + weight x CE(student, teacher argmax) summed over the kept rows / all rows."""
    model = tiny_model(tiny_backbone_dir, LABELS, **NO_DROPOUT)
    batch = toy_batch(tiny_backbone_dir, 4, 2)
    adapted = _prepared(tiny_backbone_dir, model, unlabeled, threshold=0.0, weight=0.5, class_fraction=None)
    trainer = adapted.companions["self_train"]
    with torch.no_grad():  # a teacher that differs from the student, with a spread of confidences
        for p in trainer.teacher.classifier.parameters():
            p.copy_(torch.randn_like(p) * 3)
    rows = trainer.order(0)[:8]
    clean, _ = trainer.batches(rows, torch.device("cpu"))
    with torch.no_grad():
        teacher = trainer.teacher(**clean).logits
        student = model(**clean).logits
        labelled = model(**batch).loss
    confidence = teacher.softmax(-1).max(-1).values
    threshold = float(confidence.median())
    params = trainer.params.model_copy(update={"threshold": threshold})
    trainer.params = params
    out, _ = run_step(self_train.step, adapted, batch)
    keep = confidence > threshold
    assert 0 < int(keep.sum()) < len(rows)
    ce = F.cross_entropy(student, teacher.argmax(-1), reduction="none")
    expected = labelled + 0.5 * (ce * keep).sum() / len(rows)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.metrics["self_train_kept"], keep.float().mean())


def test_fixed_teacher_soft_loss_is_kl_to_its_tempered_probabilities(
    tiny_backbone_dir, unlabeled, teacher_run
):
    """loss = labelled + weight x T^2 x KL(teacher_T || student_T), the teacher the run's best/, fixed."""
    model = tiny_model(tiny_backbone_dir, LABELS, **NO_DROPOUT)
    batch = toy_batch(tiny_backbone_dir, 4, 2)
    adapted = _prepared(
        tiny_backbone_dir,
        model,
        unlabeled,
        teacher_run=str(teacher_run),
        temperature=2.0,
        weight=0.5,
        threshold=0,
    )
    trainer = adapted.companions["self_train"]
    assert trainer.started
    assert trainer.teacher is None  # it scored the pool into the cache, then was released
    saved = tiny_model(teacher_run / "best", LABELS)
    clean, _ = trainer.batches(trainer.order(0)[:8], torch.device("cpu"))
    with torch.no_grad():
        teacher = saved(**clean).logits
        student = model(**clean).logits
        labelled = model(**batch).loss
    torch.testing.assert_close(trainer.cache.dense_logits(clean, 2), teacher)
    out, _ = run_step(self_train.step, adapted, batch)
    kl = F.kl_div(F.log_softmax(student / 2, -1), F.softmax(teacher / 2, -1), reduction="batchmean")
    torch.testing.assert_close(out.loss, labelled + 0.5 * 4 * kl)
    assert float(out.metrics["self_train_kept"]) == 1.0
    for step in (1, 5, 9):  # never refreshed from the student
        with torch.no_grad():
            model.classifier.weight.add_(1.0)
        self_train.on_optimizer_step(adapted, trainer.params, OptimizerStepContext(step, 10, lambda t: t))
        torch.testing.assert_close(trainer.cache.dense_logits(clean, 2), teacher)
    # a threshold keeps the confident rows: their KL summed, divided by all rows
    keep = torch.tensor([True, False, True, True, False, False, True, False])
    rows = F.kl_div(F.log_softmax(student / 2, -1), F.softmax(teacher / 2, -1), reduction="none").sum(-1)
    ours = labels.soft_pseudo_label_loss(student, teacher, keep, 2.0)
    torch.testing.assert_close(ours, 4 * (rows * keep).sum() / 8)
    # multi-label: binary, per (row, label): the same gradients as the binary KL
    s = student.clone().requires_grad_(True)
    multi_keep = torch.ones_like(s, dtype=torch.bool)
    labels.soft_pseudo_label_loss(s, teacher, multi_keep, 2.0).backward()
    p, q = (teacher / 2).sigmoid(), (s.detach().clone().requires_grad_(True))
    binary_kl = p * (p.log() - (q / 2).sigmoid().log()) + (1 - p) * (
        (1 - p).log() - (1 - (q / 2).sigmoid()).log()
    )
    (4 * binary_kl.mean()).backward()
    torch.testing.assert_close(s.grad, q.grad)


def test_fixed_teacher_takes_no_schedule_and_must_match_the_labels(tiny_backbone_dir, unlabeled, teacher_run):
    with pytest.raises(ValueError, match="teacher_run is a fixed teacher.*rounds"):
        self_train.Params(unlabeled_file=unlabeled, teacher_run=str(teacher_run), rounds=2)
    other = tiny_model(tiny_backbone_dir, ["x", "y"])
    with pytest.raises(ConfigError, match=r"methods\.self_train\.params\.teacher_run: .* has labels"):
        _prepared(tiny_backbone_dir, other, unlabeled, teacher_run=str(teacher_run))


def test_teacher_is_refreshed_on_its_schedule(tiny_backbone_dir, unlabeled):
    due = self_train.refresh_due
    rounds = self_train.Params(unlabeled_file=unlabeled, warm_start=0.3, rounds=3)
    assert [s for s in range(20) if due(rounds, s, 20)] == [6, 10, 15]
    every = self_train.Params(unlabeled_file=unlabeled, warm_start=0.3, refresh_every=4)
    assert [s for s in range(20) if due(every, s, 20)] == [6, 10, 14, 18]
    one = self_train.Params(unlabeled_file=unlabeled, warm_start=0.3)
    assert [s for s in range(20) if due(one, s, 20)] == [6]

    model = tiny_model(tiny_backbone_dir, LABELS)
    adapted = _prepared(tiny_backbone_dir, model, unlabeled, warm_start=0.3, rounds=3)
    trainer, weight = adapted.companions["self_train"], model.classifier.weight
    teacher_weight = trainer.teacher.classifier.weight
    refreshed = []
    for step in range(1, 20):
        with torch.no_grad():
            weight.add_(1.0)  # an optimizer step
        before = teacher_weight.clone()
        self_train.on_optimizer_step(adapted, trainer.params, OptimizerStepContext(step, 20, lambda t: t))
        if not torch.equal(teacher_weight, before):
            refreshed.append(step)
            assert torch.equal(teacher_weight, weight)
        assert trainer.started == (step >= 6)
    assert refreshed == [6, 10, 15]
    assert not teacher_weight.requires_grad


def test_unlabeled_rows_are_read_with_the_runs_columns(tmp_path):
    """The label column is ignored (any value, or none); an empty text is reported as file:line."""
    rows = [("a fine film", "not-a-label"), ("dull", "")]
    table = write_csv(tmp_path / "u.csv", rows, header=("review", "label"))
    assert load_inputs(table, Columns("review", "label")) == {"text": ["a fine film", "dull"]}
    pairs = write_csv(tmp_path / "p.csv", [("q one", "a one"), ("q two", "a two")], header=("q", "a"))
    assert load_inputs(pairs, Columns("q", None, "a")) == {
        "text": ["q one", "q two"],
        "text_pair": ["a one", "a two"],
    }
    bad = write_csv(tmp_path / "bad.csv", [("fine", "x"), ("", "y")])
    with pytest.raises(DataError, match=r"bad\.csv:3"):
        load_inputs(bad, Columns("text"))


def test_unlabeled_file_errors_name_the_file(tiny_backbone_dir, tmp_path):
    model = tiny_model(tiny_backbone_dir, LABELS)
    with pytest.raises(DataError, match="missing.csv"):
        _prepared(tiny_backbone_dir, model, tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="rounds or refresh_every"):
        self_train.Params(unlabeled_file=tmp_path, rounds=2, refresh_every=3)


def _run(cfg, resume_from=None, evaluate_fn=None):
    plan = resolve(cfg)
    inputs = prepare_inputs(plan)
    result = train(
        plan,
        inputs,
        build_accelerator(cfg.train),
        evaluate=evaluate_fn or (lambda m: {"accuracy": 0.5}),
        resume_from=resume_from,
    )
    return result, inputs


@pytest.mark.parametrize(
    "teacher",
    [
        {"threshold": 0.5, "warm_start": 0.25, "rounds": 2},
        {"teacher_run": "TEACHER", "temperature": 2.0, "threshold": 0.0},
    ],
    ids=["own", "fixed"],
)
def test_interrupted_run_resumes_with_identical_losses(make_config, toy_data, tmp_path, teacher, teacher_run):
    """Stopped after the first teacher and before the second (own), or mid-run (a fixed teacher_run):
    unlabelled position, teacher and the started flag come back, so every later loss repeats."""
    if "teacher_run" in teacher:
        teacher = teacher | {"teacher_run": str(teacher_run)}
    params = {"unlabeled_file": str(toy_data["test"]), "consistency": {"prob": 1.0}, **teacher}
    sections = {
        "data": {"max_train_samples": 32},
        "methods": [{"name": "self_train", "params": params}],
        "train": {"num_train_epochs": 3, "eval_steps": 1},
    }  # 12 steps: teacher taken after step 3 and step 7
    full, _ = _run(make_config(**sections))
    cfg = make_config(**{**sections, "train": {**sections["train"], "output_dir": str(tmp_path / "cut")}})
    calls = {"n": 0}

    def interrupt(model):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return {"accuracy": 0.5}

    first, _ = _run(cfg, evaluate_fn=interrupt)
    assert first.stopped == "interrupted"
    assert first.step == 5
    resumed, _ = _run(cfg, resume_from=first.checkpoint)
    assert sorted(resumed.losses) == list(range(6, 13))
    for step, loss in resumed.losses.items():
        assert loss == pytest.approx(full.losses[step], abs=1e-6), step
    logged = [json.loads(line) for line in (cfg.train.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("train/self_train_kept", 0) > 0 for r in logged)  # the pseudo-label term took part


def test_learns_the_toy_task_with_an_unlabeled_pool(make_config, tmp_path):
    """Half the rows labelled, an unlabelled pool beside them: dev accuracy well above chance."""
    pool = write_csv(tmp_path / "pool.csv", toy_rows(96, seed=21))
    params = {"unlabeled_file": str(pool), "threshold": 0.7, "warm_start": 0.4, "rounds": 2}
    cfg = make_config(
        data={"max_train_samples": 48},
        methods=[{"name": "self_train", "params": params}],
        train={"num_train_epochs": 12},
    )
    plan = resolve(cfg)
    result, inputs = _run(cfg)
    metrics = evaluate(
        inputs.adapted.model,
        plan.task,
        inputs.dev,
        inputs.collator,
        inputs.labels,
        16,
        params=inputs.task_params,
    )
    assert metrics["accuracy"] >= 0.8
    assert result.losses[max(result.losses)] < result.losses[min(result.losses)]
