"""Policy and per-server settings as msgspec Structs (the config file decodes into these)."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["BackoffPolicy", "BreakerPolicy", "IntensityPolicy", "RetryPolicy", "ServerDefaults", "ServerSpec"]


class BackoffPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Restart backoff: ``min(max, min * 2**n) * (1 + U[0,1) * jitter)``."""

    min: float = 0.5
    max: float = 30.0
    jitter: float = 0.2
    reset_after: float | None = None  # None: (min + max) / 2
    max_consecutive: int | None = None

    def delay(self, n: int, uniform: float) -> float:
        """The delay before restart ``n`` (0-based); ``uniform`` is a draw from U[0, 1)."""
        # 2.0**n overflows past n = 1023 (some 8.5 h of a server failing at the 30 s cap).
        return min(self.max, self.min * 2.0 ** min(n, 1023)) * (1.0 + uniform * self.jitter)

    @property
    def reset_seconds(self) -> float:
        return self.reset_after if self.reset_after is not None else (self.min + self.max) / 2


class IntensityPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_restarts: int = 3
    max_seconds: float = 5.0


class BreakerPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The circuit breaker. Defaults are the seed's (threshold 5, recovery 60 s)."""

    enabled: bool = True
    failure_threshold: int = 5
    window: int = 20
    min_calls: int = 10
    failure_rate: float = 0.5
    slow_call_seconds: float | None = None
    slow_call_rate: float = 0.5
    open_seconds: float = 60.0
    max_open_seconds: float = 600.0
    half_open_permits: int = 1


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Retry with full jitter. Defaults are the seed's (3 retries, 1 s .. 10 s, base 2)."""

    max_retries: int = 3
    initial_delay: float = 1.0
    max_delay: float = 10.0
    exponential_base: float = 2.0
    budget_ratio: float = 0.2
    budget_window: float = 10.0


class ServerDefaults(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The per-server values that ``supervisor.defaults`` may set for every server.

    The defaults here are `ServerSpec`'s. A server's own keys override these field by field;
    nested policies (``backoff``, ``breaker``, ``retry``) are merged key by key, so a server
    that sets only ``retry.max_delay`` keeps the default ``retry.max_retries``.

    ``tools_ttl`` is not here: its default comes from `SupervisorSettings.cache_tools` and
    `SupervisorSettings.cache_ttl` (the seed's names for it).
    """

    timeout: float = 60.0
    connect_timeout: float = 30.0
    max_concurrency: int = 16
    max_queue: int = 64
    hang_threshold: int = 3
    garbage_threshold: int = 3
    max_message_bytes: int = 32 * 1024 * 1024  # a stdio line, a streamable-HTTP SSE event or JSON body
    health_check_interval: float | None = 30.0  # None: never; see actors' check_health
    health_check_timeout: float = 10.0
    shutdown_timeout: float = 5.0
    namespace: Literal["prefix", "none"] = "none"
    trust_annotations: bool = True
    restart: Literal["permanent", "transient", "temporary"] = "permanent"
    backoff: BackoffPolicy = BackoffPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    retry: RetryPolicy = RetryPolicy()


class ServerSpec(ServerDefaults, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One MCP server as the supervisor runs it.

    Exactly one of ``command`` (stdio) or ``url`` (remote) is set; ``transport`` says which
    remote transport (``streamable-http``/``http`` or ``sse``). The fields every server may
    take from ``supervisor.defaults`` are inherited from `ServerDefaults`.
    """

    name: str
    command: str | None = None
    args: list[str] = []
    env: dict[str, str] = {}
    cwd: str | None = None
    url: str | None = None
    transport: Literal["stdio", "sse", "streamable-http", "http"] | None = None
    headers: dict[str, str] = {}
    tools_ttl: float | None = None  # None: cached until list_changed or restart
    categories: dict[str, str] = {}
    retry_safe_tools: list[str] = []
    enabled: bool = True
    #: What the ``${VAR}`` references of this server's entry took from the environment,
    #: variable name -> value (filled in by ``load_config``; not a config file key). Those
    #: whose name says secret (``GITHUB_TOKEN``) are hidden in what the supervisor says,
    #: wherever the reference stood (``supervisor._redact``). Who builds a spec by hand may
    #: name a secret here that its place in the spec would not reveal.
    from_environ: dict[str, str] = {}

    @property
    def kind(self) -> str:
        """``stdio``, ``sse``, ``streamable-http``, or ``inproc`` (neither command nor url:
        an in-process server object handed to the supervisor)."""
        if self.command is not None:
            return "stdio"
        if self.url is None:
            return "inproc"
        return "sse" if self.transport == "sse" else "streamable-http"
