"""Server settings: pydantic-settings, every field overridable by a ``TUNELAB_SERVE_<FIELD>`` variable.

Environment variables are the one place tunelab reads configuration from the environment (STYLE 4):
serving secrets and deployment knobs belong there, so N identical worker processes behind a load
balancer (``uvicorn --factory``) configure themselves without a config file.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from tunelab.errors import ConfigError, ServingError, format_validation_error

_ENV = "TUNELAB_SERVE_"
logger = logging.getLogger(__name__)


class SafetySettings(BaseModel):
    """The safety gate: a classification run judges every generated reply before it is sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: Path = Field(
        description="Classification run dir (or its best/) that judges each generated reply; a path inside "
        "the working directory."
    )
    block_labels: list[str] = Field(
        min_length=1, description="Labels of that run that block a reply (checked against the run at start)."
    )
    threshold: float = Field(
        default=0.5, ge=0, le=1, description="A reply is blocked when a block label's probability reaches it."
    )
    refusal: str = Field(
        default="Sorry, I can't send that reply. Please rephrase your request or ask for a colleague.",
        min_length=1,
        description="The message sent instead of a blocked reply.",
    )

    @field_validator("run")
    @classmethod
    def _inside_working_dir(cls, run: Path) -> Path:
        """Refuse a run outside the working directory (``..``, a symlink out, an absolute path elsewhere).

        Why: the gate loads weights from it, and a value read from the environment must not point the
        server at a model outside the deployment's directory.
        """
        base = Path.cwd().resolve()
        if not run.resolve().is_relative_to(base):
            raise ValueError(f"{run} leaves the working directory {base}; name a run inside it")
        return run


class ServeSettings(BaseSettings):
    """Everything ``create_app`` needs besides the predictor."""

    model_config = SettingsConfigDict(env_prefix=_ENV, env_nested_delimiter="__", extra="forbid", frozen=True)

    model_dir: str = Field(
        description="Model to serve: a tunelab/HF model dir, a shipped model name, or an assistant app's "
        "settings file (*_app.yaml)."
    )
    host: str = Field(default="127.0.0.1", description="Interface to bind; loopback unless you mean it.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to bind.")
    api_key: SecretStr | None = Field(default=None, description="One accepted API key.")
    api_keys_file: Path | None = Field(
        default=None, description="File with accepted API keys, one a line (blank lines and #comments skip)."
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="Serve without an API key on purpose (--no-auth), also on a non-loopback host behind "
        "an authenticating proxy; logs a warning.",
    )
    max_batch_size: int = Field(default=32, ge=1, description="Inputs per model call (1 = no batching).")
    sub_batch_size: int = Field(
        default=16,
        ge=1,
        description="Inputs per forward inside one model call, longest first, so short inputs do not pad "
        "to the longest of the call.",
    )
    decode_batch_size: int = Field(
        default=8,
        ge=1,
        description="Replies a causal LM decodes together: requests join and leave the running batch "
        "at every step (continuous batching); 1 decodes one request at a time.",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="Inference precision: auto = bf16 autocast where the device has native bf16 "
        "(avx512_bf16/AMX CPU, bf16 GPU) and the model is not int8, else fp32.",
    )
    max_wait_ms: float = Field(
        default=5.0,
        ge=0,
        description="How long the first queued input waits for others to join its batch (0: none; inputs "
        "arriving while the model runs still form the next batch).",
    )
    max_queue_size: int = Field(
        default=256, ge=1, description="Inputs waiting for the model; beyond it requests get 429."
    )
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After seconds sent with 429.")
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Per-request limit on queueing + inference; beyond it 504."
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1, description="Request body limit; beyond it 413.")
    max_batch_items: int = Field(default=64, ge=1, description="Inputs per request; beyond it 422.")
    max_explain_items: int = Field(
        default=4,
        ge=1,
        description="Inputs per request with explain: true (each costs explain_steps forward and backward "
        "passes with ig); beyond it 422.",
    )
    explain_steps: int = Field(
        default=32, ge=2, le=512, description="Integrated-gradients interpolation steps per explanation."
    )
    max_input_tokens: int = Field(
        default=512, ge=1, description="Tokens per input (prompt), counted with the model's tokenizer."
    )
    max_new_tokens: int = Field(default=512, ge=1, description="Upper bound on a request's max_tokens.")
    log_inputs: bool = Field(
        default=False, description="Log request inputs (emails, phone numbers, digit runs masked)."
    )
    drain_timeout_s: int = Field(
        default=30, ge=1, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch intra-op threads (default: torch's)."
    )
    safety: SafetySettings | None = Field(
        default=None,
        description="Safety gate on generated replies (run, block_labels, threshold, refusal; "
        "--safety FILE or TUNELAB_SERVE_SAFETY__<KEY>); none: replies are sent unchecked.",
    )

    @model_validator(mode="after")
    def _queue_holds_a_request(self) -> ServeSettings:
        if self.max_batch_items > self.max_queue_size:
            raise ValueError(
                f"max_batch_items ({self.max_batch_items}) exceeds max_queue_size ({self.max_queue_size}): "
                "such a request could never be queued; raise max_queue_size or lower max_batch_items"
            )
        return self


def load_api_keys(settings: ServeSettings) -> list[str]:
    """Accepted keys from ``api_key`` and ``api_keys_file``; the caller hashes them and drops the text.

    A key source that is set but holds no key (``TUNELAB_SERVE_API_KEY=""``, e.g. from an unset shell
    variable) is refused unless ``allow_unauthenticated``: it would silently serve without a key.
    """
    keys = []
    if settings.api_key is not None:
        key = settings.api_key.get_secret_value().strip()
        keys += [key] if key else []
        if not key and not settings.allow_unauthenticated:
            raise ServingError(
                f"{_ENV}API_KEY is set but empty, which would serve without authentication; set it to a "
                f"key, or serve without one on purpose: --no-auth ({_ENV}ALLOW_UNAUTHENTICATED=true)"
            )
    if settings.api_keys_file is not None:
        try:
            lines = settings.api_keys_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ServingError(
                f"api_keys_file {settings.api_keys_file}: cannot read ({exc.strerror})"
            ) from None
        in_file = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not in_file and not settings.allow_unauthenticated:
            raise ServingError(
                f"{_ENV}API_KEYS_FILE {settings.api_keys_file} holds no key, which would serve without "
                "authentication; add keys, or serve without one on purpose: --no-auth"
            )
        keys += in_file
    return keys


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: ServeSettings, n_keys: int, bind_host: str | None) -> None:
    """Refuse to expose an unauthenticated model beyond this machine unless explicitly allowed.

    ``bind_host`` None (an address this process does not choose, as under ``uvicorn --factory``)
    counts as exposed.
    """
    if n_keys or (bind_host is not None and is_loopback(bind_host) and not settings.allow_unauthenticated):
        return
    if settings.allow_unauthenticated:
        where = bind_host or "the address uvicorn binds"
        logger.warning(
            "serving without an API key (--no-auth): anyone who can reach %s can use the model", where
        )
        return
    where = f"on {bind_host}" if bind_host is not None else "behind uvicorn --factory"
    raise ServingError(
        f"refusing to serve {where} without an API key: anyone who can reach the port could use the "
        "model. Set TUNELAB_SERVE_API_KEY or TUNELAB_SERVE_API_KEYS_FILE, bind 127.0.0.1, or set "
        "TUNELAB_SERVE_ALLOW_UNAUTHENTICATED=true if a proxy in front does the authentication"
    )


def load_settings(**values: Any) -> ServeSettings:
    """Settings from ``values`` over TUNELAB_SERVE_* variables; all problems in one ConfigError."""
    try:
        return ServeSettings(**values)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid serve settings (key = option, or {_ENV}<KEY> variable):\n"
            + format_validation_error(exc, ServeSettings)
        ) from None
