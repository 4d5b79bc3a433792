"""seq2seq: label masking and the decoder shift, target-weighted accumulation, generated-text metrics equal
to rouge-score/sacrebleu, learning on toy pairs, save -> load identical generations, CLI eval/predict,
and both starts built by tunelab: the from-scratch T5 and the BERT2BERT warm start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sacrebleu
import torch
import yaml
from rouge_score import rouge_scorer
from transformers import AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer
from typer.testing import CliRunner

from toy_tasks import TOY_TASKS, tiny_bert_dir, tiny_t5_dir, toy_pairs, write_csv
from tunelab.cli import app
from tunelab.config import validate_config
from tunelab.errors import ConfigError, DataError, TunelabError
from tunelab.evaluation import evaluate
from tunelab.inference.artifact import load_artifact
from tunelab.inference.generate import generate_ids
from tunelab.inference.predict import predict_outputs, predict_records
from tunelab.models.manifest import content_digest
from tunelab.models.run_info import read_run_info
from tunelab.tasks.seq2seq import TASK, Params, generated_texts
from tunelab.tasks.spec import IGNORE_INDEX, Predicted, tokenize_dataset
from tunelab.training import build_accelerator, prepare_inputs, resolve, train


def s2s_raw(tmp_path: Path, **train: Any) -> dict[str, Any]:
    return {
        **TOY_TASKS["seq2seq"](tmp_path),
        "train": {
            "output_dir": str(tmp_path / "run"),
            "batch_size": 8,
            "lr": 3e-3,
            "save_steps": 1000,
            "seed": 7,
            "group_by_length": False,
            "max_grad_norm": None,
            **train,
        },
    }


def features_of(pairs: list[tuple[str, str]], tokenizer: Any, params: Params = Params()) -> list[dict]:
    batch = {"text": [s for s, _ in pairs], "target": [t for _, t in pairs], "example_id": [0, 1]}
    out = TASK.preprocess(batch, tokenizer, params, {})
    return [dict(zip(out, values, strict=True)) for values in zip(*out.values(), strict=True)]


def test_collator_pads_labels_with_ignore_index_and_shifts_decoder_inputs():
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir())
    rows = features_of(
        [("the movie was good", "positive good"), ("bad", "negative bad the movie was")], tokenizer
    )
    batch = TASK.collator(tokenizer, Params())(rows)
    short, long = (len(r["labels"]) for r in rows)
    assert short < long
    assert batch["labels"][0, short:].eq(IGNORE_INDEX).all()
    assert batch["labels"][0, :short].tolist() == rows[0]["labels"]
    pad = tokenizer.pad_token_id
    assert batch["decoder_input_ids"][:, 0].eq(pad).all()
    expected = batch["labels"][:, :-1].masked_fill(batch["labels"][:, :-1] == IGNORE_INDEX, pad)
    assert torch.equal(batch["decoder_input_ids"][:, 1:], expected)
    assert "example_id" not in batch


def test_decoder_inputs_equal_the_models_own_shift():
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir())
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir()).eval()
    batch = TASK.collator(tokenizer, Params())(features_of(toy_pairs(2, seed=5), tokenizer))
    with torch.no_grad():
        ours = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        theirs = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
    torch.testing.assert_close(ours, theirs.logits)
    assert TASK.count_targets(batch, Params()) == (batch["labels"] != IGNORE_INDEX).sum()


def test_accumulated_run_takes_the_same_step_as_one_batch(tmp_path: Path):
    """Ragged targets: 4 micro-batches of 2 give the loss and weights of one batch of 8 (count_targets)."""

    def run(name: str, batch_size: int, accumulation: int):
        raw = s2s_raw(tmp_path, output_dir=str(tmp_path / name), max_steps=1, batch_size=batch_size,
                      gradient_accumulation_steps=accumulation)  # fmt: skip
        plan = resolve(validate_config(raw))
        inputs = prepare_inputs(plan)
        for module in inputs.adapted.model.modules():  # dropout draws differ per micro-batch: off
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            if isinstance(getattr(module, "dropout", None), float):  # T5Attention's functional dropout
                module.dropout = 0.0
        result = train(plan, inputs, build_accelerator(plan.cfg.train))
        lengths = {sum(label != IGNORE_INDEX for label in row) for row in inputs.train[:8]["labels"]}
        return result.losses[1], dict(inputs.adapted.model.named_parameters()), lengths

    loss8, weights8, lengths = run("one", 8, 1)
    loss42, weights42, _ = run("four", 2, 4)
    assert len(lengths) > 2, "targets must be ragged for this test to mean anything"
    assert loss42 == pytest.approx(loss8, abs=1e-5)
    for name, weight in weights8.items():
        torch.testing.assert_close(weights42[name].detach(), weight.detach(), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module", params=["t5", "bert2bert"])
def cli_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy pairs trained through ``tunelab train``: on the tiny T5 (60 steps), and on a BERT2BERT
    warm-started from a tiny BERT (its untrained start is ``<run>/init``)."""
    tmp = tmp_path_factory.mktemp("s2s")
    raw = s2s_raw(tmp, max_steps=60, eval_steps=60, warmup_steps=2, logging_steps=10)
    raw["data"]["test_file"] = raw["data"]["dev_file"]
    if request.param == "bert2bert":
        raw["model"] = {"name_or_path": str(tiny_bert_dir())}
        raw["task"]["params"]["warm_start"] = True
        raw["train"] |= {"max_steps": 150, "eval_steps": 150}  # a random tiny BERT: no head start
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["train", str(tmp / "cfg.yaml")])
    assert result.exit_code == 0, result.output
    return tmp / "run"


def test_run_record_hashes_the_configured_start_not_the_warm_started_init(cli_run: Path):
    """BERT2BERT trains from ``<run>/init``, built from the BERT the config names: the record (and a
    resume, a verify re-run) must name that BERT, or a re-run would warm-start from a built init/."""
    info = read_run_info(cli_run / "best")
    assert info is not None
    assert info.config is not None
    start = info.data_files["model.name_or_path"]
    assert start.path == str(Path(info.config.model.start).resolve())
    assert start.sha256 == content_digest(Path(start.path)).sha256


def scores_of(model: Any, tokenizer: Any, params: Params, rows: Any) -> tuple[dict[str, Any], list[str]]:
    features = tokenize_dataset(TASK, params, tokenizer, rows, [])
    collator = TASK.collator(tokenizer, params)
    metrics = evaluate(
        model, TASK, features, collator, [], 8, params=params, examples=rows, tokenizer=tokenizer
    )
    outputs = predict_outputs(model, TASK, features, collator, 8, params=params)
    texts = generated_texts(Predicted(outputs.arrays, features, rows, [], params, tokenizer))
    return metrics, texts


def test_training_lowers_loss_and_raises_rouge_and_bleu_over_the_untrained_model(cli_run: Path):
    best = load_artifact(cli_run / "best")
    rows = TASK.read_eval(cli_run.parent / "s2s_dev.jsonl", None, best.task_params, [])
    start = cli_run / "init" if (cli_run / "init").is_dir() else tiny_t5_dir()
    untrained = AutoModelForSeq2SeqLM.from_pretrained(start)
    before, _ = scores_of(untrained, best.tokenizer, best.task_params, rows)
    after, texts = scores_of(best.model, best.tokenizer, best.task_params, rows)
    assert after["token_loss"] < 0.6 * before["token_loss"]
    assert after["rouge1"] > before["rouge1"] + 10
    assert after["rougeL"] > before["rougeL"] + 10
    assert after["bleu"] >= before["bleu"]
    assert sum(t.split()[:1] == ["negative"] for t in texts) > 0  # the polarity word, never in a source
    assert best.task_params.lead_words == round(np.mean([len(t.split()) for _, t in toy_pairs(48, seed=2)]))
    assert after["baseline_rouge1"] == before["baseline_rouge1"] > 0


def test_metrics_equal_rouge_score_and_sacrebleu_on_the_decoded_strings(cli_run: Path):
    best = load_artifact(cli_run / "best")
    rows = TASK.read_eval(cli_run.parent / "s2s_dev.jsonl", None, best.task_params, [])
    metrics, texts = scores_of(best.model, best.tokenizer, best.task_params, rows)
    gold = list(rows["target"])
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    direct = [scorer.score(g, t) for t, g in zip(texts, gold, strict=True)]
    for kind in ("rouge1", "rouge2", "rougeL"):
        assert metrics[kind] == pytest.approx(100 * np.mean([s[kind].fmeasure for s in direct]))
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(texts, [gold]).score)
    lead = [" ".join(s.split()[: best.task_params.lead_words]) for s in rows["text"]]
    assert metrics["baseline_bleu"] == pytest.approx(sacrebleu.corpus_bleu(lead, [gold]).score)


def test_save_load_gives_identical_generations_and_predict_matches_eval(cli_run: Path):
    best = load_artifact(cli_run / "best")
    rows = TASK.read_eval(cli_run.parent / "s2s_dev.jsonl", None, best.task_params, [])
    _, texts = scores_of(best.model, best.tokenizer, best.task_params, rows)
    again = load_artifact(cli_run / "best")
    records = [{"text": t} for t in rows["text"]]
    first = predict_records(best, records, batch_size=5)
    assert first == predict_records(again, records, batch_size=16)
    assert [p["generated"] for p in first] == texts


def test_cli_eval_and_predict(cli_run: Path):
    runner = CliRunner()
    data = cli_run.parent / "s2s_dev.jsonl"
    evaluated = runner.invoke(app, ["eval", str(cli_run / "best"), "--data", str(data)])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.stdout[evaluated.stdout.index("{") :])
    saved = json.loads((cli_run / "best" / "metrics.json").read_text())["test"]
    assert metrics["rougeL"] == pytest.approx(saved["rougeL"])
    assert metrics["bleu"] == pytest.approx(saved["bleu"])
    source = json.loads(data.read_text().splitlines()[0])["source"]
    predicted = runner.invoke(app, ["predict", str(cli_run), "--text", source])
    assert predicted.exit_code == 0, predicted.output
    (line,) = [json.loads(x) for x in predicted.stdout.splitlines() if x.startswith("{")]
    assert (
        line["generated"]
        == predict_records(load_artifact(cli_run / "best"), [{"text": source}], 1)[0]["generated"]
    )


def test_from_scratch_builds_a_t5_and_a_tokenizer_that_knows_target_words(tmp_path: Path):
    raw = s2s_raw(tmp_path, max_steps=1)
    raw["model"] = {"name_or_path": "scratch"}
    scratch = {"architecture": "t5", "vocab_size": 200, "min_frequency": 1, "hidden_size": 32, "layers": 1,
               "heads": 2}  # fmt: skip
    raw["task"]["params"]["from_scratch"] = scratch
    plan = resolve(validate_config(raw))
    inputs = prepare_inputs(plan)
    config = inputs.adapted.model.config
    assert config.model_type == "t5"
    assert config.is_encoder_decoder
    assert config.decoder_start_token_id == config.pad_token_id == inputs.tokenizer.pad_token_id
    assert config.eos_token_id == inputs.tokenizer.sep_token_id
    vocab = inputs.tokenizer.get_vocab()
    assert "positive" in vocab  # "positive" is only ever a target word: the tokenizer saw the targets
    assert (plan.model_dir / "config.json").is_file()
    result = train(plan, inputs, build_accelerator(plan.cfg.train))
    assert np.isfinite(result.losses[1])


def test_no_repeat_ngram_size_blocks_the_untrained_models_loops():
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir())
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir()).eval()
    model.generation_config.eos_token_id = None  # never stop, never emit pad: 16 tokens to loop in
    model.generation_config.suppress_tokens = [tokenizer.pad_token_id]
    batch = TASK.collator(tokenizer, Params())(features_of(toy_pairs(2, seed=5), tokenizer))

    def bigrams(params: Params) -> list[list[tuple[int, ...]]]:
        out = generate_ids(model, batch, TASK.generation(params))
        ids, lengths = out["generated_ids"], out["generated_length"]
        rows = [row[:n].tolist() for row, n in zip(ids, lengths, strict=True)]
        return [list(zip(row, row[1:], strict=False)) for row in rows]

    loose = bigrams(Params(max_target_length=16))
    assert all(len(set(row)) < len(row) for row in loose), "the random T5 loops: what the option must stop"
    for row in bigrams(Params(max_target_length=16, no_repeat_ngram_size=2)):
        assert len(set(row)) == len(row)


def test_warm_start_copies_the_encoder_into_both_halves(tmp_path: Path):
    raw = s2s_raw(tmp_path, max_steps=1)
    raw["model"] = {"name_or_path": str(tiny_bert_dir())}
    raw["task"]["params"]["warm_start"] = True
    plan = resolve(validate_config(raw))
    inputs = prepare_inputs(plan)
    model = inputs.adapted.model
    source = AutoModelForMaskedLM.from_pretrained(tiny_bert_dir()).bert.state_dict()
    for name, weight in source.items():
        if name.startswith(("embeddings.", "encoder.")):
            torch.testing.assert_close(model.encoder.state_dict()[name], weight, rtol=0, atol=0)
            torch.testing.assert_close(model.decoder.bert.state_dict()[name], weight, rtol=0, atol=0)
    assert model.decoder.config.is_decoder
    assert model.decoder.config.add_cross_attention
    config = model.config
    assert config.decoder_start_token_id == config.pad_token_id == inputs.tokenizer.pad_token_id
    assert config.eos_token_id == inputs.tokenizer.sep_token_id
    assert (tmp_path / "run" / "init" / "config.json").is_file()
    result = train(plan, inputs, build_accelerator(plan.cfg.train))
    assert np.isfinite(result.losses[1])


def test_default_lora_adapts_both_halves_of_a_bert2bert_and_trains(tmp_path: Path):
    """peft has no default targets for the composite encoder-decoder type; LoRA's own default (every
    backbone linear) covers encoder, decoder and cross-attention, never the LM head."""
    raw = s2s_raw(tmp_path, max_steps=2, lr=1e-2)
    raw["model"] = {"name_or_path": str(tiny_bert_dir())}
    raw["task"]["params"]["warm_start"] = True
    raw["methods"] = [{"name": "lora", "params": {"r": 4}}]
    plan = resolve(validate_config(raw))
    inputs = prepare_inputs(plan)
    adapted = {name for name, p in inputs.adapted.model.named_parameters() if "lora_A" in name}
    for part in ("encoder.encoder.", "decoder.bert.encoder.", "crossattention.self.query"):
        assert any(part in name for name in adapted), part
    assert not any("cls.predictions.decoder" in name for name in adapted)  # the tied LM head
    before = {name: p.detach().clone() for name, p in inputs.adapted.model.named_parameters()}
    result = train(plan, inputs, build_accelerator(plan.cfg.train))
    assert np.isfinite(result.losses[2])
    changed = {
        n for n, p in inputs.adapted.model.named_parameters() if not torch.equal(before[n], p.detach())
    }
    assert changed
    assert all("lora_" in name for name in changed), sorted(changed)[:5]


def test_warm_start_is_refused_with_from_scratch_and_on_an_encoder_decoder(tmp_path: Path):
    raw = s2s_raw(tmp_path, max_steps=1)
    raw["task"]["params"] |= {"warm_start": True, "from_scratch": {"architecture": "t5"}}
    with pytest.raises(ConfigError, match=r"task\.params.*pick one"):
        resolve(validate_config(raw))
    raw["task"]["params"].pop("from_scratch")
    with pytest.raises(TunelabError, match="already an encoder-decoder"):
        prepare_inputs(resolve(validate_config(raw)))


@pytest.mark.parametrize(
    ("task", "architecture", "match"),
    [
        ("seq2seq", "bert", r"task\.params\.from_scratch.*t5"),
        ("lm_pretrain", "t5", r"task\.params: .*encoder-decoder: task seq2seq"),
    ],
)
def test_scratch_architecture_must_fit_the_task(tmp_path: Path, task: str, architecture: str, match: str):
    raw = s2s_raw(tmp_path)
    raw["model"] = {"name_or_path": "scratch"}
    raw["task"] = {"name": task, "params": {"from_scratch": {"architecture": architecture}}}
    with pytest.raises(ConfigError, match=match):
        resolve(validate_config(raw))


def test_bad_rows_are_reported_with_file_and_line(tmp_path: Path):
    path = write_csv(
        tmp_path / "pairs.csv", [("a good movie", "positive good"), ("a dull plot", "")], ("source", "target")
    )
    raw = s2s_raw(tmp_path)
    raw["data"] = {"train_file": str(path), "dev_file": str(path)}
    with pytest.raises(DataError, match=r"pairs\.csv:3: empty text in column 'target'"):
        TASK.load_data(validate_config(raw).data, Params(), 0)
    raw["task"]["params"] = {"target_column": "title"}
    with pytest.raises(DataError, match=r"column 'title' not found"):
        TASK.load_data(validate_config(raw).data, Params(target_column="title"), 0)
