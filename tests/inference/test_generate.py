"""The one generation path: stop strings, sampling seeds, streaming, CLI predict, save -> load parity."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from toy_tasks import TOY_TASKS, tiny_llama_dir
from tunelab.cli import app
from tunelab.config import validate_config
from tunelab.inference.artifact import load_artifact
from tunelab.inference.generate import Generation, GenerationJob, GenerationOptions, generate, stream
from tunelab.inference.predict import predict_records
from tunelab.models.artifact import save_model
from tunelab.serving.predictor import load_predictor
from tunelab.tasks.causal_lm import chat_prompt
from tunelab.training import build_accelerator, prepare_inputs, resolve, train
from tunelab.workflows import run_info

PROMPTS = ["the movie was good", "awful plot and a dull actor"]


@pytest.fixture(scope="module")
def lm():
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir(), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_llama_dir())


def job(tokenizer, **kwargs) -> GenerationJob:
    """A chat prompt; seeded sampling by default (the random model's greedy reply is one repeated token)."""
    kwargs = {"temperature": 1.0, "seed": 1, **kwargs}
    prompt = chat_prompt(tokenizer, [{"role": "user", "content": PROMPTS[0]}])
    return GenerationJob(prompt=prompt, add_special_tokens=False, **{"max_new_tokens": 16, **kwargs})


def test_generation_stops_at_a_stop_string_and_excludes_it(lm):
    model, tokenizer = lm
    full = generate(model, tokenizer, job(tokenizer))
    assert full.finish_reason == "length"
    assert full.completion_tokens == 16
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    cut = generate(model, tokenizer, job(tokenizer, stop=[stop]))
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens  # decoding itself ended, not just the text


def test_sampling_is_seeded_and_knobs_change_it(lm):
    model, tokenizer = lm
    a = generate(model, tokenizer, job(tokenizer, temperature=1.0, seed=5))
    b = generate(model, tokenizer, job(tokenizer, temperature=1.0, seed=5))
    c = generate(model, tokenizer, job(tokenizer, temperature=1.0, seed=6))
    greedy = generate(model, tokenizer, job(tokenizer, temperature=0))
    top1 = generate(model, tokenizer, job(tokenizer, temperature=1.0, top_k=1, seed=6))
    assert a.text == b.text
    assert a.text != c.text
    assert top1.text == greedy.text  # top-k 1 sampling is greedy


def test_stream_yields_pieces_incrementally_that_join_to_the_reply(lm):
    model, tokenizer = lm
    items = list(stream(model, tokenizer, job(tokenizer)))
    *pieces, final = items
    assert isinstance(final, Generation)
    assert len(pieces) >= 3
    assert "".join(pieces) == final.text == generate(model, tokenizer, job(tokenizer)).text


def test_stream_cuts_at_stop_strings_like_generate(lm):
    model, tokenizer = lm
    full = generate(model, tokenizer, job(tokenizer)).text
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    *pieces, final = stream(model, tokenizer, job(tokenizer, stop=[stop]))
    assert "".join(pieces) == final.text == full[: full.index(stop)]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory) -> Path:
    """A few SFT steps on the toy chat rows, saved as a run's model."""
    tmp = tmp_path_factory.mktemp("sft")
    cfg = validate_config(
        {
            **TOY_TASKS["causal_lm"](tmp),
            "train": {"output_dir": str(tmp / "run"), "batch_size": 8, "lr": 1e-2, "max_steps": 4, "seed": 7},
        }
    )
    plan = resolve(cfg)
    inputs = prepare_inputs(plan)
    train(plan, inputs, build_accelerator(plan.cfg.train))
    save_model(inputs.adapted.model, inputs.tokenizer, tmp / "best", run_info(plan, inputs))
    return tmp / "best"


def test_saved_model_carries_template_and_generation_config_and_generates_identically(sft_run):
    assert (sft_run / "chat_template.jinja").is_file()
    assert (sft_run / "generation_config.json").is_file()
    art = load_artifact(sft_run)
    records = [{"text": p} for p in PROMPTS]
    options = GenerationOptions(max_new_tokens=12)
    first = predict_records(art, records, 8, options)
    again = predict_records(load_artifact(sft_run), records, 8, options)
    assert first == again
    served = load_predictor(str(sft_run))
    prompt = served.chat_prompt([{"role": "user", "content": PROMPTS[0]}])
    assert prompt == art.task.generation_prompt(records[0], art.tokenizer, art.task_params)
    reply = served.generate(
        GenerationJob(prompt=prompt, max_new_tokens=12, temperature=0, add_special_tokens=False)
    )
    assert reply.text == first[0]["generated"]


def test_cli_predict_generates_jsonl_and_streams_the_same_text(sft_run):
    runner = CliRunner()
    args = ["predict", str(sft_run), "--text", PROMPTS[0], "--max-new-tokens", "12"]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0, plain.output
    row = json.loads(plain.stdout.strip().splitlines()[-1])
    assert row["text"] == PROMPTS[0]
    assert row["finish_reason"] in ("stop", "length")
    assert 1 <= row["completion_tokens"] <= 12
    speed = re.search(r"generated (\d+) tokens in [\d.]+ s: ([\d.]+) tokens/s", plain.stderr)
    assert speed, plain.stderr
    assert int(speed[1]) == row["completion_tokens"]
    assert float(speed[2]) > 0
    streamed = runner.invoke(app, [*args, "--stream"])
    assert streamed.exit_code == 0, streamed.output
    assert streamed.stdout == row["generated"] + "\n"


def test_cli_eval_scores_response_tokens_of_a_conversation_file(sft_run, tmp_path):
    from toy_tasks import toy_conversations, write_jsonl

    data = write_jsonl(tmp_path / "dev.jsonl", toy_conversations(8, seed=9))
    scored = CliRunner().invoke(app, ["eval", str(sft_run), f"--data={data}"])
    assert scored.exit_code == 0, scored.output
    metrics = json.loads(scored.stdout[scored.stdout.index("{") :])
    assert metrics["n_tokens"] > 8  # every response token (EOS included), not one per row
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["token_loss"]), rel=1e-6)
    assert metrics["loss"] == pytest.approx(metrics["token_loss"], rel=1e-6)


def test_export_keeps_template_and_generation_config_and_replies(sft_run, tmp_path):
    out = tmp_path / "exported"
    exported = CliRunner().invoke(app, ["export", str(sft_run), "--to", str(out)])
    assert exported.exit_code == 0, exported.output
    assert (out / "chat_template.jinja").is_file()
    assert (out / "generation_config.json").is_file()
    records = [{"text": PROMPTS[1]}]
    options = GenerationOptions(max_new_tokens=8)
    expected = predict_records(load_artifact(sft_run), records, 8, options)
    assert predict_records(load_artifact(out), records, 8, options) == expected
