"""SFT of the real SmolLM2-135M-Instruct on tunelab-instruct: a few steps lower the held-out response loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.assets import prepare_dataset
from tunelab.config import load_config
from tunelab.evaluation import evaluate
from tunelab.inference.generate import GenerationJob, generate
from tunelab.tasks.causal_lm import chat_prompt
from tunelab.training import build_accelerator, prepare_inputs, resolve, train

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sft_smollm2.yaml"


@pytest.mark.slow
def test_sft_lowers_held_out_response_loss_and_learns_to_stop(tmp_path: Path):
    data = tmp_path / "data"
    prepare_dataset("tunelab-instruct", data)
    overrides = [
        f"--data.train_file={data / 'train.jsonl'}",
        f"--data.dev_file={data / 'dev.jsonl'}",
        "--data.max_eval_samples=8",
        f"--train.output_dir={tmp_path / 'run'}",
        "--train.max_steps=4",
        "--train.lr=1e-4",
        "--train.warmup_steps=0",
    ]
    plan = resolve(load_config(EXAMPLE, overrides))
    inputs = prepare_inputs(plan)
    model = inputs.adapted.model

    def dev_loss() -> float:
        metrics = evaluate(model, plan.task, inputs.dev, inputs.collator, [], 8, params=inputs.task_params)
        return metrics["token_loss"]

    before = dev_loss()
    result = train(plan, inputs, build_accelerator(plan.cfg.train))
    after = dev_loss()
    assert result.step == 4
    assert after < 0.9 * before, (before, after)

    # the set's answers are short and end with EOS: the tuned model now stops by itself, well before 16
    prompt = chat_prompt(inputs.tokenizer, [{"role": "user", "content": "What is the capital of Peru?"}])
    job = GenerationJob(prompt=prompt, max_new_tokens=16, temperature=0, add_special_tokens=False)
    reply = generate(model.eval(), inputs.tokenizer, job)
    assert reply.finish_reason == "stop"
    assert reply.text.strip()
