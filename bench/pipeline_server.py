"""Baseline for bench_serve.py: a plain ``transformers.pipeline`` behind a minimal FastAPI route.

    python bench/pipeline_server.py MODEL_DIR PORT [--dtype bfloat16]

What most people write first: a sync route (FastAPI runs it in its thread pool) calling the pipeline
on the request's inputs. No batching across requests, no limits, no auth.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from transformers import pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="a saved text-classification model dir")
    parser.add_argument("port", type=int)
    parser.add_argument("--dtype", default="float32", help="the pipeline's dtype (float32 or bfloat16)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    pipe = pipeline("text-classification", model=args.model_dir, device=-1, dtype=getattr(torch, args.dtype))
    app = FastAPI()

    @app.post("/v1/predict")
    def predict(body: dict[str, Any]) -> Any:
        return pipe(body["inputs"])

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
