"""Tiny saved models of every registered task under every way tunelab saves one, and serving them.

``ARTIFACT_KINDS`` are the saved forms a user can serve: a LoRA run's adapter dir (unmerged), that
adapter merged (``tunelab export --merge``), a full run exported as int8 (``--quantize int8``) or pruned
(``--prune magnitude``), a MoE-upcycled run and a distilled student. Each is trained for two steps
through the real loop and saved by the same ``save_model`` training's ``best/`` uses, then exported by
the real ``export_model``; ``ArtifactCache`` builds each at most once per test module. ``serve`` runs
one in process as ``tunelab serve`` would, and ``check_served`` asserts its routes answer as
``tunelab predict`` does.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from fastapi.testclient import TestClient

from toy_tasks import TOY_TASKS, toy_images, toy_run_config
from tunelab.data.images import encode_png
from tunelab.export.pipeline import ExportOptions, export_model
from tunelab.inference.artifact import Artifact
from tunelab.inference.generate import GenerationJob, GenerationOptions, generate
from tunelab.inference.predict import predict_records
from tunelab.methods import METHODS
from tunelab.models.architectures import mean_pool
from tunelab.models.artifact import save_model
from tunelab.models.load import takes_text
from tunelab.serving.app import create_app
from tunelab.serving.predictor import load_predictor
from tunelab.serving.settings import ServeSettings
from tunelab.tasks import TASKS
from tunelab.training import build_accelerator, prepare_inputs, resolve, train
from tunelab.training.plan import method_target
from tunelab.workflows import run_info

# kind -> (the run it comes from, the export applied to that run's saved model, or None)
ARTIFACT_KINDS: dict[str, tuple[str, ExportOptions | None]] = {
    "lora": ("lora", None),
    "merged": ("lora", ExportOptions(merge=True, latency_repeats=1)),
    "int8": ("full", ExportOptions(quantize="int8", latency_repeats=1)),
    "pruned": ("full", ExportOptions(prune="magnitude", recovery_steps=1, latency_repeats=1)),
    "moe": ("moe", None),
    "distill": ("distill", None),
}

RUN_METHODS: dict[str, Callable[[Callable[[], Path]], list[dict[str, Any]]]] = {
    "full": lambda teacher: [{"name": "full"}],
    "lora": lambda teacher: [{"name": "lora", "params": {"r": 4}}],
    "moe": lambda teacher: [{"name": "moe", "params": {"n_routed_experts": 4, "granularity": 2}}],
    "distill": lambda teacher: [{"name": "distill", "params": {"teacher": str(teacher())}}],
}


def refusal(task_name: str, kind: str) -> str | None:
    """Why the run behind ``kind`` cannot train ``task_name`` (its method's declared refusal), or None."""
    method = ARTIFACT_KINDS[kind][0]
    if method == "full":
        return None
    spec, task = METHODS.get(method), TASKS.get(task_name)
    if spec.refuses is None:
        return None
    params = {"teacher": "unused"} if method == "distill" else {}
    return spec.refuses(spec.params.model_validate(params), method_target(task, [spec]))


def cases() -> list[tuple[str, str]]:
    """Every (registered task, artifact kind) whose run the method does not refuse."""
    return [(t, k) for t in TASKS.names() for k in ARTIFACT_KINDS if refusal(t, k) is None]


def train_and_save(
    work: Path, backbone: Path, sections: dict[str, Any], methods: list[dict[str, Any]], **settings: Any
) -> Any:
    """Train through the real loop (two steps; ``settings`` override ``train:``), save like a run's ``best/``.

    Returns (model, best dir).
    """
    cfg = toy_run_config(backbone, sections, methods, work / "run", **{"max_steps": 2, **settings})
    plan = resolve(cfg)
    inputs = prepare_inputs(plan)
    train(plan, inputs, build_accelerator(plan.cfg.train))
    model = inputs.adapted.model.eval()
    save_model(model, inputs.tokenizer, work / "run" / "best", run_info(plan, inputs))
    return model, work / "run" / "best"


class ArtifactCache:
    """Builds (once) and returns the saved model dir of ``(task, kind)`` under ``root``."""

    def __init__(self, root: Path, backbone: Path) -> None:
        self.root, self.backbone = root, backbone
        self.built: dict[tuple[str, str], Path] = {}
        self.trained: dict[tuple[str, str], Any] = {}  # (task, method) -> the in-memory trained model

    def run(self, task: str, method: str) -> Path:
        """A two-step run of ``task`` under ``method``, saved like a run's ``best/``."""
        key = (task, f"run-{method}")
        if key not in self.built:
            work = self.root / task / method
            work.mkdir(parents=True, exist_ok=True)
            methods = RUN_METHODS[method](lambda: self.run(task, "full"))
            self.trained[task, method], self.built[key] = train_and_save(
                work, self.backbone, TOY_TASKS[task](work), methods
            )
        return self.built[key]

    def __call__(self, task: str, kind: str) -> Path:
        """The served directory of ``kind`` for ``task``."""
        if (task, kind) not in self.built:
            method, export = ARTIFACT_KINDS[kind]
            source = self.run(task, method)
            if export is None:
                self.built[task, kind] = source
            else:
                dest = self.root / task / kind
                export_model(source, dest, export)
                self.built[task, kind] = dest
        return self.built[task, kind]


KEY = "served-models-key-0123456789"
TEXTS = ["the movie was good and lovely", "a dull plot"]
QA_ITEMS = [
    {"question": "what was good", "context": "the movie was superb and the plot quite dull"},
    {"question": "what was good", "context": "it was a fine scene"},
]
NEW_TOKENS = 6


@contextmanager
def serve(path: Path, **settings: Any) -> Iterator[TestClient]:
    """The server ``tunelab serve PATH`` runs, in process (lifespan included), authenticated."""
    values = {"model_dir": str(path), "api_key": KEY, "max_new_tokens": 64, **settings}
    app = create_app(ServeSettings(**values), load_predictor(str(path)))
    with TestClient(app, headers={"X-API-Key": KEY}) as client:
        yield client


def served_inputs(art: Artifact, records: list[dict[str, Any]]) -> list[Any]:
    """``records`` as ``/v1/predict`` takes them: texts as strings, image files base64-encoded."""
    if art.task.input_fields == ("text",):
        return [r["text"] for r in records]
    if art.task.input_fields == ("image",):
        return [base64.b64encode(r["image"]).decode("ascii") for r in records]
    return records


def records_of(art: Artifact) -> list[dict[str, Any]]:
    """Raw prediction records in the task's input fields (an image task's: PNG files of toy images)."""
    if art.task.input_fields == ("question", "context"):
        return QA_ITEMS
    if art.task.input_fields == ("image",):
        return [{"image": encode_png(image)} for image in toy_images(3, seed=5)[0]]
    assert art.task.input_fields == ("text",), f"add inputs for {art.task.input_fields}"
    return [{"text": text} for text in TEXTS]


def is_generating(art: Artifact) -> bool:
    """Whether the task answers with generated text (OpenAI-style routes) rather than /v1/predict."""
    return art.task.generation_prompt is not None or art.task.generation is not None


def is_encoder(art: Artifact) -> bool:
    """A text model, neither a decoder nor an encoder-decoder: the model embeds at /v1/embeddings."""
    config = cast(Any, art.model).config  # an adapter dir has no config.json; the loaded model has one
    return (
        takes_text(art.tokenizer)
        and not config.is_encoder_decoder
        and not any(arch.endswith("ForCausalLM") for arch in config.architectures or [])
    )


def close(got: Any, want: Any, where: str = "") -> None:
    """Deep equality of JSON values, floats within 1e-5."""
    if isinstance(want, float) or isinstance(got, float):
        assert got == pytest.approx(want, abs=1e-5), where
    elif isinstance(want, dict):
        assert isinstance(got, dict), where
        assert got.keys() == want.keys(), where
        for key in want:
            close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list), where
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            close(g, w, f"{where}[{i}]")
    else:
        assert got == want, where


@torch.no_grad()
def backbone_embeddings(art: Artifact, texts: list[str]) -> list[list[float]]:
    """Mean-pooled, normalised last hidden states of the model's backbone (adapter applied)."""
    model = art.model
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    batch = art.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    hidden = cast(Any, inner).base_model(**batch).last_hidden_state
    return cast(list[list[float]], mean_pool(hidden, batch["attention_mask"]).tolist())


def check_served(client: TestClient, art: Artifact) -> None:
    """Every route the task must have answers as ``tunelab predict`` on ``art`` does.

    A forward task: ``/v1/predict`` equals its serve schema's rendering of ``predict_records``. A
    generating task: greedy chat and completion text (``check_generation``). An encoder also embeds.
    """
    records = records_of(art)
    if is_generating(art):
        check_generation(client, art, records)
    else:
        schema = art.task.serve_schema
        assert schema is not None, f"task {art.task.name} has no /v1/predict schema: it cannot be served"
        inputs = served_inputs(art, records)
        response = client.post("/v1/predict", json={"inputs": inputs})
        assert response.status_code == 200, response.text
        reference = predict_records(art, records, batch_size=len(records))
        model_id = response.json()["model"]
        close(response.json(), schema.build(model_id, reference).model_dump(mode="json"), "predict")
    if is_encoder(art):
        response = client.post("/v1/embeddings", json={"input": TEXTS})
        assert response.status_code == 200, response.text
        close([d["embedding"] for d in response.json()["data"]], backbone_embeddings(art, TEXTS), "embed")


def check_generation(client: TestClient, art: Artifact, records: list[dict[str, Any]]) -> None:
    """Greedy chat and completion text equals what ``tunelab predict`` / the one generation path give.

    Chat with one user message is the prompt ``tunelab predict`` builds for a record; a completion of a
    raw prompt is the generation path on that prompt (a seq2seq model: its source, as predict).
    """
    options = GenerationOptions(max_new_tokens=NEW_TOKENS)
    if art.task.generation is not None:  # seq2seq decodes with the task's own options
        options = GenerationOptions(max_new_tokens=art.task.generation(art.task_params)["max_new_tokens"])
    reference = predict_records(art, records, batch_size=1, generation=options)
    model_id = client.get("/v1/models").json()["data"][0]["id"]
    for record, ref in zip(records, reference, strict=True):
        text = record["text"]
        chat = client.post(
            "/v1/chat/completions",
            json={
                "model": model_id,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": options.max_new_tokens,
                "temperature": 0,
            },
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"] == ref["generated"]
        completion = client.post(
            "/v1/completions",
            json={"model": model_id, "prompt": text, "max_tokens": options.max_new_tokens, "temperature": 0},
        )
        assert completion.status_code == 200, completion.text
        if art.task.generation_prompt is not None:  # a raw prompt, not the chat rendering predict builds
            job = GenerationJob(prompt=text, max_new_tokens=options.max_new_tokens, temperature=0.0)
            want = generate(art.model, art.tokenizer, job).text
        else:
            want = ref["generated"]
        assert completion.json()["choices"][0]["text"] == want
