"""Run ``tunelab.serving.app.run`` (uvicorn + SIGTERM handling) with a classifier made slow on purpose.

Used by the drain test as a separate process: MODEL_DIR PORT on the command line.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tunelab.serving.app import create_app, run
from tunelab.serving.predictor import load_predictor
from tunelab.serving.settings import load_settings


def main() -> None:
    model_dir, port = sys.argv[1], int(sys.argv[2])
    settings = load_settings(
        model_dir=model_dir, port=port, api_key="k", max_batch_size=1, drain_timeout_s=20
    )
    predictor = load_predictor(model_dir)
    fast_predict = predictor.predict

    def slow_predict(texts: Any) -> Any:
        time.sleep(0.5)
        return fast_predict(texts)

    predictor.predict = slow_predict  # type: ignore[method-assign]
    run(create_app(settings, predictor), settings)


if __name__ == "__main__":
    main()
