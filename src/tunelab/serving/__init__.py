"""HTTP serving: one model per process behind FastAPI, built by ``app.create_app(settings, predictor)``."""
