"""What ``ortgen serve`` can be told: where to listen, who may call, how much one request may ask."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"  # loopback unless told otherwise
DEFAULT_PORT = 8000


@dataclass(frozen=True)
class ServeConfig:
    """Server settings. Limits on one request are checked before it reaches the scheduler; the
    scheduler's own limits (running requests, queue, KV budget) are its SchedulerLimits."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None  # Bearer token for every route but health; None: open
    model_name: str | None = None  # the name clients use (default: the package directory's name)
    request_timeout: float = 600.0  # seconds from arrival to the last token; then 504 and the request is cancelled
    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int | None = None  # default: the model's positions
    max_tokens: int | None = None  # new tokens one request may ask for (default: the model's positions)
    max_n: int = 16  # sequences returned per prompt
    max_beam_width: int = 16
    max_prompts: int = 32  # prompts in one OpenAI completions request
    grace_seconds: float = 30.0  # after SIGTERM: how long running requests may take to finish
    retry_after_seconds: int = 1  # the Retry-After of a 429
