"""prompt_classification: both scoring layouts equal a per-label loop, calibration maths, PET, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoTokenizer
from typer.testing import CliRunner

from toy_tasks import TOY_TASKS, tiny_llama_dir, toy_methods, toy_rows, write_csv
from tunelab.cli import app
from tunelab.config import validate_config
from tunelab.errors import ConfigError
from tunelab.evaluation import evaluate
from tunelab.inference.artifact import load_artifact
from tunelab.inference.predict import predict_records
from tunelab.models.artifact import save_model
from tunelab.tasks import prompt_classification as pc
from tunelab.tasks.spec import load_with_labels
from tunelab.training import build_accelerator, prepare_inputs, resolve, train
from tunelab.workflows import run_info

LABELS = ["negative", "positive"]
TEXTS = ["the plot was awful", "a lovely and superb movie, the actor was great", "fine"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama_dir()


def _fitted(**params: object) -> pc.Params:
    verbalizer = {"positive": "good news", "negative": "bad"}
    return pc.fit(pc.Params(verbalizer=verbalizer, **params), None, LABELS)


def _reference_scores(model, tokenizer, params: pc.Params, prompts: list[list[int]]) -> torch.Tensor:
    """One unpadded forward per (prompt, label), summing log p of each verbalizer token in a Python loop."""
    verbs = pc.verbalizer_ids(tokenizer, params)
    scores = torch.zeros(len(prompts), len(verbs))
    for i, prompt in enumerate(prompts):
        for c, verb in enumerate(verbs):
            ids = torch.tensor([prompt + verb])
            logp = model(input_ids=ids).logits[0].log_softmax(-1)
            total = sum(float(logp[len(prompt) + j - 1, tok]) for j, tok in enumerate(verb))
            scores[i, c] = total if params.score == "sum" else total / len(verb)
    return scores


def _batch_scores(model, tokenizer, params: pc.Params, texts: list[str]):
    features = pc.preprocess(
        {"text": texts, "label": ["negative", "positive", "positive"][: len(texts)]},
        tokenizer,
        params,
        {"negative": 0, "positive": 1},
    )
    rows = [dict(zip(features, values, strict=True)) for values in zip(*features.values(), strict=True)]
    batch = pc.collator(tokenizer, params)(rows)
    out = model(**{k: v for k, v in batch.items() if k not in pc.TASK.target_keys})
    return features["input_ids"], out, pc.label_scores(out, batch)["logits"]


@pytest.mark.parametrize(
    ("score", "chat", "shared"),
    [
        ("mean", True, True),
        ("sum", True, True),
        ("sum", False, True),
        ("mean", True, False),
        ("sum", False, False),
    ],
)
@torch.no_grad()
def test_label_scores_equal_per_label_log_likelihood_loop(llama_dir, score, chat, shared):
    """Both layouts (one packed row per prompt with a 4D mask, one row per label) equal unpadded forwards."""
    params = _fitted(
        score=score,
        chat_template=chat,
        shared_prefix=shared,
        calibration="none",
        template="Review: {text}\nSentiment ({choices}):",
    )
    model = load_with_labels(pc.TASK, llama_dir, LABELS, params).eval()
    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    verbs = pc.verbalizer_ids(tokenizer, params)
    assert any(len(v) > 1 for v in verbs), "a multi-token verbalizer must be covered"

    prompts, out, got = _batch_scores(model, tokenizer, params, TEXTS)

    kept = sum(len(v) for v in verbs) if shared else max(len(v) for v in verbs)
    assert out.logits.shape[:2] == (len(TEXTS) * (1 if shared else len(verbs)), kept + 1)
    torch.testing.assert_close(got, _reference_scores(model, tokenizer, params, prompts), rtol=0, atol=1e-4)


@pytest.mark.parametrize("shared", [True, False])
@torch.no_grad()
def test_contextual_calibration_divides_by_the_content_free_label_probabilities(llama_dir, shared):
    """Calibrated logits = raw scores - log(mean over content-free prompts of softmax(their raw scores))."""
    params = _fitted(shared_prefix=shared, content_free=["N/A", "", "[MASK]"])
    assert params.calibration == "contextual", "calibration is the default"
    model = load_with_labels(pc.TASK, llama_dir, LABELS, params).eval()
    tokenizer = AutoTokenizer.from_pretrained(llama_dir)

    prompts, _, got = _batch_scores(model, tokenizer, params, TEXTS)

    raw = _reference_scores(model, tokenizer, params, prompts)
    free = _reference_scores(model, tokenizer, params, pc.prompt_ids(params.content_free, tokenizer, params))
    expected = raw - free.softmax(-1).mean(0).log()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_calibrate_cancels_a_label_prior_as_zhao_et_al_define_it():
    """softmax(calibrate) = diag(p_cf)^-1 p renormalised; a prior shared by text and content-free rows
    cancels, so a model that always says label 0 ranks by the text's own evidence."""
    evidence = torch.tensor([[0.2, -0.1], [-0.5, 0.3]])  # (B, C): the text's own preference
    prior = torch.tensor([3.0, 0.0])  # a bias toward label 0 whatever the input
    free = torch.stack([prior, prior + 1.0])  # (K, C): content-free rows see only the bias (any shift)

    got = pc.calibrate(evidence + prior, free)

    assert (evidence + prior).argmax(-1).tolist() == [0, 0]
    assert got.argmax(-1).tolist() == [0, 1]
    p, p_cf = (evidence + prior).softmax(-1), free.softmax(-1).mean(0)
    torch.testing.assert_close(got.softmax(-1), (p / p_cf) / (p / p_cf).sum(-1, keepdim=True))


def test_training_through_the_prior_ignores_a_shift_toward_one_label():
    """The prior is part of the loss's graph: a parameter that moves every input toward one label
    (content-free ones too) gets no gradient, so PET steps go to the text's own evidence."""
    bias = torch.zeros(2, requires_grad=True)
    scores = torch.tensor([[0.2, -0.1], [-0.5, 0.3]]) + bias
    free = torch.tensor([[1.0, 0.0]]) + bias

    torch.nn.functional.cross_entropy(pc.calibrate(scores, free), torch.tensor([0, 0])).backward()

    assert bias.grad is not None
    torch.testing.assert_close(bias.grad, torch.zeros(2))
    detached = torch.zeros(2, requires_grad=True)
    torch.nn.functional.cross_entropy(
        scores.detach() + detached - free.detach(), torch.tensor([0, 0])
    ).backward()
    assert detached.grad is not None
    assert detached.grad.abs().max() > 0.1, "without the prior in the graph the shift would be learned"


def test_packed_mask_keeps_each_label_block_to_the_prompt():
    """Row = pad, prompt (2 tokens), label 0 (2 tokens), label 1 (1 token); who may attend to whom."""
    batch = pc.packed_batch([[5, 6]], [[7, 8], [9]], pad=0)
    allowed = batch["attention_mask"][0, 0] == 0  # (T, T), additive mask: 0 = may attend
    expected = torch.tensor(
        [  # keys: prompt prompt a0 a1 b0   (no pad: the one prompt is the longest)
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(allowed, expected)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2]]
    assert batch["score_index"].tolist() == [0, 1, 0]  # a0 and b0 are read off the prompt's last logit
    padded = pc.packed_batch([[5, 6], [4]], [[7]], pad=0)
    assert padded["input_ids"][1].tolist() == [0, 4, 7]
    assert (padded["attention_mask"][1, 0] == 0).tolist()[0] == [True, False, False], "pad sees itself"


def test_prompt_is_the_chat_template_user_turn_with_text_and_choices(llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    params = _fitted(template="Review: {text}\nOne of: {choices}", max_length=4, chat_template=True)
    texts = pc.truncate_texts(["one two three four five six"], tokenizer, 4)
    (prompt,) = pc.render_prompts(texts, tokenizer, params)
    assert "<|im_start|>user\nReview: one two three four\nOne of: bad, good news<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    (plain,) = pc.render_prompts(texts, tokenizer, params.model_copy(update={"chat_template": False}))
    assert plain == "Review: one two three four\nOne of: bad, good news"  # the default: a plain completion


def test_params_and_fit_refuse_bad_values():
    with pytest.raises(ValueError, match=r"\{text\}"):
        pc.Params(template="no placeholder")
    with pytest.raises(ConfigError, match=r"verbalizer: unknown labels \['neutral'\]"):
        pc.fit(pc.Params(verbalizer={"neutral": "meh"}), None, LABELS)
    with pytest.warns(UserWarning, match="task.params.calibration: none: .*below the majority class"):
        pc.Params(calibration="none")


def test_check_model_refuses_an_encoder(tiny_backbone_dir, tmp_path):
    cfg = _config(tiny_backbone_dir, tmp_path, TOY_TASKS["prompt_classification"](tmp_path))
    with pytest.raises(ConfigError, match="not one; use e.g. smollm2"):
        prepare_inputs(resolve(cfg))


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning", "moe"])
def test_methods_needing_a_padding_mask_refuse_the_shared_prefix_default(llama_dir, tmp_path, method):
    """The default packs labels under a 4D mask; these methods say so at validation, naming the fix,
    and take one row per label (the contract matrix trains them that way)."""
    sections = TOY_TASKS["prompt_classification"](tmp_path)
    del sections["task"]["params"]["shared_prefix"]
    raw = {**sections, "methods": toy_methods(method), "train": {"output_dir": str(tmp_path / "run")}}
    with pytest.raises(ConfigError, match=r"methods\[0\]\.name: .*set shared_prefix: false"):
        resolve(validate_config(raw))
    sections["task"]["params"]["shared_prefix"] = False
    assert resolve(validate_config(raw)).task is pc.TASK


def _config(model_dir: Path, tmp_path: Path, sections: dict, **data: object):
    sections = {**sections, "data": {**sections["data"], **data}}
    sections.pop("model", None)
    return validate_config(
        {
            "model": {"name_or_path": str(model_dir)},
            **sections,
            "methods": [{"name": "full"}],
            "train": {
                "output_dir": str(tmp_path / "run"),
                "num_train_epochs": 20,
                "batch_size": 8,
                "lr": 1e-3,
                "save_steps": 1000,
                "seed": 3,
            },
        }
    )


@pytest.mark.parametrize("shared", [False, True])
def test_k_shot_training_lifts_accuracy_above_chance_and_round_trips(llama_dir, tmp_path, shared):
    """Calibrated PET-style training on 32 rows per label through the real loop, in both layouts; the
    saved model predicts the same. (With a detached calibration prior this stalled at 0.58.)"""
    sections = TOY_TASKS["prompt_classification"](tmp_path)
    sections["task"]["params"]["shared_prefix"] = shared
    sections["data"]["train_file"] = str(write_csv(tmp_path / "train.csv", toy_rows(200, seed=8)))
    sections["data"]["dev_file"] = str(write_csv(tmp_path / "dev.csv", toy_rows(48, seed=9)))
    plan = resolve(_config(llama_dir, tmp_path, sections, k_shot=32))
    inputs = prepare_inputs(plan)
    assert len(inputs.train) == 64
    scored = {"task": plan.task, "features": inputs.dev, "collator": inputs.collator, "labels": inputs.labels}
    before = evaluate(inputs.adapted.model, batch_size=16, params=inputs.task_params, **scored)

    train(plan, inputs, build_accelerator(plan.cfg.train))
    after = evaluate(inputs.adapted.model, batch_size=16, params=inputs.task_params, **scored)

    assert after["accuracy"] >= max(0.8, before["accuracy"] + 0.25), (before["accuracy"], after["accuracy"])
    save_model(inputs.adapted.model, inputs.tokenizer, tmp_path / "best", run_info(plan, inputs))
    records = [{"text": text} for text in TEXTS]
    loaded = load_artifact(tmp_path / "best")
    live = dataclasses.replace(loaded, model=inputs.adapted.model.eval())
    assert predict_records(loaded, records, 3) == predict_records(live, records, 3)


def test_cli_zero_shot_saves_the_untrained_model_and_it_predicts(llama_dir, tmp_path):
    sections = TOY_TASKS["prompt_classification"](tmp_path)
    raw = {
        "model": {"name_or_path": str(llama_dir)},
        "data": {**sections["data"], "k_shot": 0, "test_file": sections["data"]["dev_file"]},
        "task": sections["task"],
        "train": {"output_dir": str(tmp_path / "run")},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(raw))
    runner = CliRunner()

    result = runner.invoke(app, ["train", str(tmp_path / "cfg.yaml")])

    assert result.exit_code == 0, result.output
    best = tmp_path / "run" / "best"
    metrics = json.loads((best / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])  # dev file == test file
    assert json.loads((best / "tunelab_run.json").read_text())["step"] == 0
    original = load_with_labels(pc.TASK, llama_dir, LABELS)
    torch.testing.assert_close(load_artifact(best).model.state_dict(), original.state_dict(), rtol=0, atol=0)
    predicted = runner.invoke(app, ["predict", str(best), "--text", TEXTS[0]])
    assert predicted.exit_code == 0, predicted.output
    assert set(json.loads(predicted.stdout.splitlines()[-1])["probabilities"]) == set(LABELS)


@pytest.mark.parametrize(
    ("task", "k_shot", "message"),
    [("lm_pretrain", 4, "does not read one label per row"), ("classification", 0, "untrained head")],
)
def test_plan_refuses_k_shot_where_it_cannot_hold(tiny_backbone_dir, tmp_path, task, k_shot, message):
    sections = TOY_TASKS[task](tmp_path)
    with pytest.raises(ConfigError, match=f"data.k_shot: .*{message}"):
        resolve(_config(tiny_backbone_dir, tmp_path, sections, k_shot=k_shot))
