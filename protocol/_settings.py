"""The resolved configuration as data: `Config`, `SupervisorSettings`, `ServerDefaults`.

Data only (msgspec and the standard library). ``supervisor._config.load_config`` builds these
from a config file and the environment and validates every value; constructing them by hand
skips those checks.

The config file's top-level ``supervisor`` section decodes into `SupervisorSettings`; its
``defaults`` table into `ServerDefaults`, the per-server values every server starts from
before its own keys are applied.
"""

from __future__ import annotations

from typing import Final

import msgspec

from ._config import ServerDefaults, ServerSpec

__all__ = [
    "DEFAULT_STALL_TIMEOUT",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_SESSION_IDLE_TIMEOUT",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_HTTP_BIND",
    "DEFAULT_MAX_BODY_BYTES",
    "UNCACHED_TOOLS_TTL",
    "Config",
    "ServerDefaults",
    "SupervisorSettings",
]

DEFAULT_HTTP_BIND: Final = "127.0.0.1:8765"
DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
DEFAULT_DRAIN_TIMEOUT: Final = 10.0
DEFAULT_STALL_TIMEOUT: Final = 30.0
DEFAULT_MAX_SESSIONS: Final = 10_000  # the mcp SDK's own defaults
DEFAULT_SESSION_IDLE_TIMEOUT: Final = 1800.0

UNCACHED_TOOLS_TTL: Final = 5.0
"""The ``tools_ttl`` every server gets when tool caching is off (``cache_tools = false``,
``COMFYUI_MCP_CACHE_TOOLS=false``): its tool list is re-read every this many seconds.

The supervisor always serves ``tools/list`` from its registry; "no cache" therefore means a
short refresh interval, on top of the ``notifications/tools/list_changed`` that every server
may send at any time (and that is always honoured at once)."""


class SupervisorSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The supervisor's own settings (the config file's ``supervisor`` section).

    - ``defaults``: per-server defaults, after the environment's overrides were applied.
    - ``http``: the ``host:port`` the HTTP façade binds (``[::1]:8765`` for IPv6).
    - ``auth_token``: the bearer token HTTP clients must send; None: no auth.
    - ``toolsets``: toolset name -> categories; added to (or replacing by name) the seed's
      toolsets.
    - ``max_body_bytes``: the largest request the daemon's front accepts: an HTTP body, or
      one line from a ``--stdio`` client (a longer one is never held; a request that long is
      answered with an error).
    - ``cache_tools`` / ``cache_ttl``: the seed's tool-cache switches. With ``cache_tools``
      false every server's default ``tools_ttl`` is `UNCACHED_TOOLS_TTL`; else it is
      ``cache_ttl`` (None: the list is kept until the server says it changed or restarts).
    - ``drain_timeout``: on the daemon's first SIGTERM/SIGINT, how long the tool calls in
      flight get to finish before they are cut off (each then answered with an error); 0:
      at once. The value in force when the signal comes counts (a reload changes it).
    - ``stall_timeout``: how long the HTTP front waits on a client that stalls: a request's
      body must arrive whole within it of the request's start (else 408, unread), and a
      client that takes none of what it is sent for that long loses its connection. A
      reload applies it to the next request and connection.
    - ``max_sessions`` / ``session_idle_timeout``: the HTTP front's MCP sessions (the
      handshake era's ``Mcp-Session-Id``). A client that never ends its session (no
      ``DELETE``: it crashed, or it opens one per call) leaves it open, about 45 KB each,
      until it has had no request in flight for ``session_idle_timeout`` s; past
      ``max_sessions`` open ones a new session is refused (503) until one ends. ``/healthz``
      counts the open ones. A reload applies both to the sessions opened after it.
    """

    defaults: ServerDefaults = ServerDefaults()
    http: str = DEFAULT_HTTP_BIND
    auth_token: str | None = None
    toolsets: dict[str, list[str]] = {}
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    cache_tools: bool = True
    cache_ttl: float | None = None
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    max_sessions: int = DEFAULT_MAX_SESSIONS
    session_idle_timeout: float = DEFAULT_SESSION_IDLE_TIMEOUT

    @property
    def default_tools_ttl(self) -> float | None:
        """The ``tools_ttl`` a server gets when it does not set its own."""
        return self.cache_ttl if self.cache_tools else UNCACHED_TOOLS_TTL


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the supervisor runs: the servers (in config order: the file's
    ``mcpServers``, then its ``servers``, then those the environment adds), the settings,
    and ``source``, the config file's path (None: no file)."""

    servers: list[ServerSpec]
    settings: SupervisorSettings = SupervisorSettings()
    source: str | None = None

    def server(self, name: str) -> ServerSpec:
        """The server called ``name``; ``KeyError`` if there is none."""
        for spec in self.servers:
            if spec.name == name:
                return spec
        raise KeyError(name)
