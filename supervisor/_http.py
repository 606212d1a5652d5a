"""The daemon's HTTP face: one ASGI app on one port, served by hypercorn's trio worker.

Routes:

- ``/mcp``: the aggregated MCP endpoint (streamable HTTP, the mcp SDK's session manager
  over `Gateway.server`). ``Host`` and ``Origin`` are validated by the SDK's
  ``TransportSecuritySettings`` (DNS-rebinding protection): a foreign ``Origin`` gets 403, a
  foreign ``Host`` 421; so are they on every other route but the probes (``/healthz``,
  ``/readyz``). While the daemon drains for shutdown, ``/mcp`` keeps answering (a client
  may need ``tools/list`` to finish a call in flight) but refuses new requests for a server (tool calls, prompts,
  resource reads, completions).
  SSE streams are resumable: a client reconnecting with ``Last-Event-ID`` gets what it
  missed in its own session (`BoundedEventStore`: the last 10,000 events, at most 64 MiB,
  in memory).
- ``GET /status``: the supervision tree as JSON (``ChildStatus``).
- ``GET /metrics``: Prometheus text (``await Supervisor.metrics_text()``; an empty
  exposition for a supervisor without it), then the front's own (``render_front``: the
  open MCP sessions).
- ``GET /healthz``: 200 while the tree runs, ``{"ok": true, "servers": N, "up": U, "down": D,
  "draining": false, "sessions": S}`` (S: the MCP sessions open over HTTP). Never needs auth.
- ``GET /readyz``: readiness, for a load balancer or a kubelet: 200 when the daemon serves
  (its servers' first start is done, it is not stopping) and every server it supervises
  is connected, its breaker letting calls through; 503 otherwise (during a reload: those
  it starts count from then on, those it removes no more, as ``/healthz`` counts). A server
  whose breaker an operator forced open (``POST /breaker/<server>/open``) is down on
  purpose: it is not counted, and is listed under ``fenced``. Body: ``{"ready": bool,
  "status": "starting" | "serving" | "stopping", "servers": N, "up": U, "not_ready":
  {name: reason}, "fenced": [name]}``, the reason being the connection's state
  (``starting``, ``restarting``, ``failed``: gave up for good, ``stopped``) or
  ``breaker_open``. Answered at once while the servers start and while the daemon drains.
  Never needs auth, as ``/healthz``; but ``not_ready`` and ``fenced`` (server names) are
  only in the answer to a request that may read ``/status`` (the token, when one is
  set, and a ``Host`` and ``Origin`` of its own).
- ``POST /reload``: `Daemon.reload`: 200 with the diff, or 400 with the config error; 500
  ``{"error": ..., "begun": false}`` when reading the config raised what no config should
  (a bug: nothing changed), ``"begun": true`` when applying it did (done in part, perhaps).
  While the daemon stops, it and ``/restart`` are 503: ``{"error": ..., "begun": false}``
  when refused (nothing was done), ``"begun": true`` when one under way was cut short.
- ``POST /restart/<server>``: `Daemon.restart`: 200 with the server's subtree status once
  the new incarnation is connected or its first attempt failed; 404 for an unknown server,
  409 while it is being replaced.
- ``POST /breaker/<server>/<action>[?reason=TEXT]``: `Supervisor.set_breaker` (``open``,
  ``disable`` or ``reset``): 200 with the server's subtree status; 404 for an unknown
  server, 400 for another action or a reason holding a control character (a line break
  in it forged a line of the log), 409 while the server is being started or replaced.

Security guarantees:

- `check_bind` refuses a non-loopback bind without an ``auth_token`` (`BindRefused`), and a
  reload refuses to remove the token of such a bind. A loopback bind without one is
  served, with a warning at start (and at a reload that removes the token) naming what
  any local account may then do (`no_token_warning`).
- With ``auth_token`` set, every route except ``/healthz`` and ``/readyz`` needs
  ``Authorization: Bearer <token>``, the scheme in any case (401 otherwise; compared in constant
  time). The token
  is the current one: a reload that sets, changes or removes it applies to the next request.
- A request whose id is no string or integer (``1.5``, ``null``) gets 400 with a JSON-RPC
  error, not the SDK's 202 for a notification, and a client's answer that is no valid
  JSON-RPC fails the question it answers at once (`screen_client_body`).
- A request whose id is in flight on its session already (``5`` and ``"5"`` count as one:
  the SDK names each request's stream ``str(id)``) gets 400 with a JSON-RPC Invalid
  Request error carrying its id, until the first is answered (or, its client gone, until
  its call has answered or its session ended): it took the first one's stream, which
  never got its answer (`InFlight`).
- Request bodies over ``max_body_bytes`` get 413 (declared or streamed), on every route; a
  body not whole within ``stall_timeout`` s of the request's start gets 408 (`BodyDeadline`).
- A client that takes nothing of what it is sent for ``stall_timeout`` s loses its
  connection (`stall_after`): hypercorn's writes are shielded, so one stuck on such a
  client held its task and its answer for good, and the daemon's exit with them.
- Every route but the probes refuses a foreign ``Host`` (421) and a foreign ``Origin``
  (403), token or not (``/readyz`` answers such a request, without server names): without
  one (the loopback default) a web page the user visits could otherwise read ``/status``
  by DNS rebinding, or post ``/restart/<server>`` and ``/reload`` cross-site (a browser
  sends such a POST without asking the server first). The control routes (``/reload``,
  ``/restart/...``, ``/breaker/...``) refuse (403) any ``Origin`` but the daemon's own
  (``http://`` and the address the request came to): a page served on another localhost
  port (a dev server, any local program's web UI) is loopback too.
- Neither the token nor any server's ``env``/``headers`` appear in responses or logs:
  ``/status`` carries only the tree, errors carry `ConfigError` messages (which redact).
"""

from __future__ import annotations

import contextlib
import hmac
import inspect
import ipaddress
import logging
import math
import os
import urllib.parse
from collections.abc import Iterator
from typing import Any

import msgspec
import trio
from hypercorn.utils import UnexpectedMessageError
from mcp import types as mcp_types
from mcp.server.streamable_http import EventStore
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import (
    RequestBodyLimitMiddleware,
    TransportSecurityMiddleware,
    TransportSecuritySettings,
)
from starlette.requests import Request

from protocol import ChildStatus
from protocol._settings import Config

from ._asgi import respond, respond_json
from ._stalls import BodyDeadline, stall_after
from ._config import PIPE_TIMEOUT, ConfigError, _bind_problem, load_config
from ._event_store import BoundedEventStore
from ._facade import Supervisor
from ._gateway import Gateway
from ._prometheus import render_front
from ._client_bodies import InFlight, screen_client_body

__all__ = ["BindRefused", "Daemon", "check_bind", "listen_http", "parse_bind", "serve_http"]

log = logging.getLogger("supervisor.http")

LOOPBACK_NAMES = ("localhost",)


class BindRefused(Exception):
    """The HTTP bind is unsafe (non-loopback without an auth token) or malformed."""


def parse_bind(bind: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) as ``(host, port)``; raises `BindRefused` for
    what ``supervisor.http`` refuses in a config (an IPv6 host goes in brackets)."""
    problem = _bind_problem(bind)
    if problem is not None:
        raise BindRefused(f"invalid HTTP bind {bind!r}: {problem}")
    host, _, port = bind.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(bind: str, auth_token: str | None) -> tuple[str, int]:
    """The bind address, refusing a non-loopback one when no ``auth_token`` is configured."""
    host, port = parse_bind(bind)
    if not is_loopback(host) and not auth_token:
        raise BindRefused(
            f"refusing to bind {host!r}: a non-loopback address needs supervisor.auth_token "
            "(clients then send 'Authorization: Bearer <token>'); bind 127.0.0.1 to serve this machine only"
        )
    return host, port


WILDCARD_HOSTS = ("0.0.0.0", "::")


def security_settings(host: str) -> TransportSecuritySettings:
    """The SDK's DNS-rebinding protection for ``/mcp``: loopback ``Host`` and ``Origin``
    values, plus the bound host when it is another specific address (127.0.0.2 or a
    non-loopback one: an address, or a name its owner chose to bind).

    A wildcard bind (``0.0.0.0``, ``::``) cannot know the names clients will use, so the
    SDK's ``Host`` check is off there; such a bind always has an auth token (`check_bind`),
    and `DaemonApp` still refuses a foreign ``Origin`` (one that is neither loopback nor the
    request's own ``Host``).
    """
    if host in WILDCARD_HOSTS:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    hosts = ["127.0.0.1", "localhost", "[::1]", "127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = ["http://127.0.0.1", "http://localhost", "http://[::1]", "http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if host not in ("127.0.0.1", "localhost", "::1"):
        shown = f"[{host}]" if ":" in host else host
        hosts += [shown, f"{shown}:*"]
        origins += [f"http://{shown}", f"http://{shown}:*", f"https://{shown}", f"https://{shown}:*"]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def origin_allowed(scope: Any) -> bool:
    """True when the request has no ``Origin``, or one whose host is loopback or the
    request's own ``Host`` (a same-origin page)."""
    headers = {key.lower(): value for key, value in scope.get("headers", [])}
    origin = headers.get(b"origin")
    if not origin:
        return True
    parsed = urllib.parse.urlsplit(origin.decode("latin-1"))
    if parsed.hostname is not None and is_loopback(parsed.hostname):
        return True
    return parsed.netloc.encode("latin-1") == headers.get(b"host")


def own_origin(scope: Any) -> bool:
    """True when the request has no ``Origin``, or exactly the daemon's own: ``http://`` and
    the address the request came to (``scope["server"]``). For the control routes, which
    no page may post: the daemon serves none, and our CLI sends no ``Origin``."""
    origin = next((value for key, value in scope.get("headers", []) if key.lower() == b"origin"), None)
    if origin is None:
        return True
    server = scope.get("server")
    if not server or server[1] is None:
        return False
    host, port = server
    shown = f"[{host}]" if ":" in host else host
    return origin.decode("latin-1") == f"http://{shown}:{port}"


class DaemonStopping(Exception):
    """A reload or restart asked of a daemon that is stopping (``begun`` False: nothing of
    it was done), or cut short by its stop (``begun`` True: done in part, perhaps)."""

    def __init__(self, message: str, begun: bool) -> None:
        super().__init__(message)
        self.begun = begun


class ReloadFailed(Exception):
    """A reload that raised what no config should make it raise (a bug, where a refusal
    would be a `ConfigError`): ``begun`` False when it was reading the config (nothing
    changed: the old config keeps running), True when it was applying it (done in part,
    perhaps). Its message names the exception, redacted; the log has its traceback."""

    def __init__(self, message: str, begun: bool) -> None:
        super().__init__(message)
        self.begun = begun


class Daemon:
    """The running daemon's state: its config, supervisor and gateway; reload lives here.

    `reload` guarantees:

    - The new config is read and fully validated before anything changes. An invalid one
      raises `ConfigError` and the old config keeps running: servers, toolsets and token
      alike. A config that removes ``auth_token`` while the HTTP front is bound to a
      non-loopback address (``http_host``) is invalid too.
    - Servers are diffed by name. Added ones start; removed ones stop (draining their calls
      in flight); changed ones are replaced in place (`Supervisor.replace_server`): calls in
      flight on the old incarnation finish, calls that arrive meanwhile wait (within their
      own deadlines) for the new one, and none fails ``UnknownTool`` or ``CircuitOpen``
      because of the swap. Unchanged ones are not touched, so their calls are unaffected.
      The reload waits for the first attempt of each server it starts (added or replaced);
      those that attempt left down are named under ``down`` with their last exit, and what
      would keep one from starting here (a command not found) is logged first, as at start.
    - The ``supervisor`` section's ``toolsets`` and ``auth_token`` take effect at once: the
      HTTP app checks ``auth_header`` on every request, so once the token is applied the old
      one gets 401 and the new one is accepted (removing it opens the routes, which only a
      loopback bind allows). ``max_sessions`` and ``session_idle_timeout`` apply to the
      sessions opened after the reload. ``http`` (the bind) and ``max_body_bytes`` take
      effect at the next start only; a warning says so.
    - Whatever reading or applying the config raises, the daemon keeps running: a
      `ConfigError` refuses the config; anything else (a bug) is logged with its traceback
      and raised as `ReloadFailed` (nothing changed when it came from the read). The file
      is read in a thread, within `read_timeout` s: one that cannot be read (a fifo, a
      hung mount) refuses the reload, and the daemon serves on meanwhile.
    - Reloads are serialized. Once validated, a reload runs to completion even if whoever
      asked for it goes away. A server whose stop, replacement or start raised is named
      under ``failed``; the others still proceed.
    - Once the daemon begins to stop (`begin_stop`), a reload or restart is refused with
      `DaemonStopping`, and one under way is cut short (its caller gets `DaemonStopping`
      too): a server it was still starting would only delay the exit past
      ``drain_timeout``, by as much as its ``connect_timeout``. An operator's breaker does
      not wait for a reload under way (`set_breaker`).
    """

    def __init__(
        self, config: Config, sup: Supervisor, gateway: Gateway, config_path: str | None, http_host: str | None = None
    ) -> None:
        """``config_path`` None: reload re-reads the bundled default. ``http_host``: the host
        the HTTP front is (to be) bound to, None for none; known from the start, so a reload
        before the front serves (a SIGHUP while the servers start) is held to it too."""
        self.config = config
        self.sup = sup
        self.gateway = gateway
        self.config_path = config_path
        self.http_host = http_host
        #: The ``Authorization`` header value every request must carry; None: no auth.
        self.auth_header: bytes | None = _auth_header(config.settings.auth_token)
        #: The HTTP front's listening sockets, once it serves (`stall_after` is set on them).
        self.listening: list[Any] = []
        #: The HTTP front's MCP session manager, once it serves.
        self.sessions: _SessionManager | None = None
        self._reload_lock = trio.Lock()
        #: True once the daemon began to stop (`begin_stop`).
        self.stopping = False
        #: Set once the servers' first start is done (each connected or failed its first
        #: try): until then the HTTP front answers ``/healthz``, ``/readyz``, ``/status``
        #: and ``/metrics``, and holds every other request.
        self.ready = trio.Event()
        #: The changes under way that a stop cuts short.
        self._changes: set[trio.CancelScope] = set()
        #: The config reads: one at a time, so a read that never ends (abandoned by its
        #: reload at `read_timeout`) holds one thread, however many reloads come after it.
        self._reader = trio.CapacityLimiter(1)
        #: The servers the reload under way removes (being stopped): no longer judged.
        self._leaving: frozenset[str] = frozenset()

    def begin_stop(self) -> None:
        """The daemon is stopping: requests in flight drain (`Gateway.draining`), no
        reload or restart is taken any more, and those under way are cut short."""
        self.stopping = True
        self.gateway.draining = True
        # A replacement (a reload's, a restart's) runs shielded to its end: without this it
        # would wait for its new incarnation's first attempt, up to its connect_timeout.
        self.sup.begin_stop()
        for scope in self._changes:
            scope.cancel()

    def _refuse_while_stopping(self, what: str) -> None:
        if self.stopping:
            raise DaemonStopping(f"the daemon is stopping: no {what} now", begun=False)

    @contextlib.contextmanager
    def _cut_short_by_stop(self, what: str) -> Iterator[None]:
        """Run the block (shielded by the caller from whoever asked) until it ends or the
        daemon begins to stop; then raise `DaemonStopping`."""
        self._refuse_while_stopping(what)
        scope = trio.CancelScope()
        self._changes.add(scope)
        try:
            with scope:
                yield
        finally:
            self._changes.discard(scope)
        if scope.cancelled_caught:
            raise DaemonStopping(f"the daemon is stopping: the {what} under way was cut short", begun=True)

    def _judged(self) -> list[str]:
        """The servers ``/healthz`` and ``/readyz`` judge: those supervised now, but the ones
        a reload under way is removing (a reload's new ones as soon as it starts them, not
        once the whole reload is done); while the servers' first start is under way (they
        are not all supervised yet), the config's enabled ones."""
        if not self.ready.is_set():
            return [spec.name for spec in self.config.servers if spec.enabled]
        return [name for name in self.sup.servers if name not in self._leaving]

    def health(self) -> dict[str, Any]:
        up = down = 0
        for name in self._judged():  # those starting too
            try:
                connected = self.sup.link(name).conn is not None
            except Exception:
                connected = False
            up, down = (up + 1, down) if connected else (up, down + 1)
        health = {
            "ok": True, "servers": up + down, "up": up, "down": down, "starting": not self.ready.is_set(),
            "draining": self.gateway.draining,
        }
        if self.sessions is not None:
            health["sessions"] = self.sessions.open_sessions
        return health

    def readiness(self, detailed: bool) -> dict[str, Any]:
        """The body of ``/readyz`` (see the module docstring); ``detailed``: name servers."""
        status = "stopping" if self.stopping else "serving" if self.ready.is_set() else "starting"
        not_ready: dict[str, str] = {}
        fenced: list[str] = []
        judged = self._judged()
        for name in judged:
            reason = self._not_ready(name, status)
            if reason == "fenced":
                fenced.append(name)
            elif reason is not None:
                not_ready[name] = reason
        counted = len(judged) - len(fenced)
        body: dict[str, Any] = {
            "ready": status == "serving" and not not_ready, "status": status,
            "servers": counted, "up": counted - len(not_ready),
        }
        if detailed:
            body["not_ready"] = not_ready
            body["fenced"] = fenced
        return body

    def _not_ready(self, name: str, status: str) -> str | None:
        """Why server ``name`` is not ready (its connection's state, or ``breaker_open``),
        ``fenced`` when an operator forced its breaker open, None when it is ready."""
        try:
            handle = self.sup.handle(name)
        except Exception:  # not started yet, or being removed
            return "starting" if status == "starting" else "stopped"
        breaker = handle.breaker.state
        if breaker == "forced_open":
            return "fenced"
        if handle.link.conn is not None:
            return "breaker_open" if breaker == "open" else None
        state = None
        with contextlib.suppress(Exception):
            if handle.subtree is not None:
                state = next(
                    (c.state for c in handle.subtree.status().children if c.id == f"connection:{name}"), None
                )
        if state in (None, "running"):  # connecting, or connected a moment ago and the link lags
            return "starting"
        return state

    async def reload(self) -> dict[str, Any]:
        """Re-read the config and apply it (see the class docstring). Returns the diff:
        server names under ``added``, ``removed``, ``updated`` (in place), ``replaced``,
        ``unchanged`` and ``failed``,
        under ``settings`` the names of the ``supervisor`` settings that changed (never
        their values), and under ``down`` the added or replaced servers not connected once
        their first attempt is done, each with its last exit (redacted). Raises
        `ConfigError` (nothing changed) for an invalid config."""
        self._refuse_while_stopping("reload")
        async with self._reload_lock:
            new = await self._read_config()
            self._check_token_keeps_bind_safe(new.settings.auth_token)
            # Validated: apply all of it, whoever asked, unless the daemon stops meanwhile.
            with trio.CancelScope(shield=True), self._cut_short_by_stop("reload"):
                try:
                    diff = await self._apply(new)
                except Exception as exc:
                    log.exception("reload: applying the config failed part way")
                    raise ReloadFailed(self._unexpected("applying the config", exc), begun=True) from None
        return diff

    #: How long a reload may take to read the config (its file and envFiles), in seconds:
    #: past the config layer's own bound on a FIFO (`PIPE_TIMEOUT`, time for a person to
    #: authorize 1Password's read), twice over.
    read_timeout = 2 * PIPE_TIMEOUT

    async def _read_config(self) -> Config:
        """The config file, read and validated again, in a thread: a file that cannot be
        read (a fifo no one writes, a hung network mount) would otherwise freeze the whole
        daemon, ``/healthz`` and every call included. Raises `ConfigError` for one refused,
        or not read within `read_timeout` (the read is abandoned; at most one such read is
        left waiting, `_reader`), `ReloadFailed` (``begun`` False) for anything else reading
        it raised. While an earlier read abandoned at its deadline has not ended, a reload is
        refused at once, saying so (reloads are serialized: the reader's one thread is
        that read's)."""
        if self._reader.borrowed_tokens:
            raise ConfigError(
                self.config_path, "", f"an earlier read of it, given up after {self.read_timeout:g} s, has not ended "
                "yet (a fifo no one writes, a hung mount? the file or an envFile of it): no other read starts until "
                "it does",
            )
        try:
            with trio.move_on_after(self.read_timeout):
                return await trio.to_thread.run_sync(
                    load_config, self.config_path, abandon_on_cancel=True, limiter=self._reader
                )
            raise ConfigError(
                self.config_path, "", f"not read within {self.read_timeout:g} s (a fifo no one writes, a hung "
                "mount? the file or an envFile of it)",
            )
        except ConfigError:
            raise
        except Exception as exc:
            log.exception("reload refused, the old config keeps running: reading the config failed")
            raise ReloadFailed(self._unexpected("reading the config", exc), begun=False) from None

    def _unexpected(self, what: str, exc: Exception) -> str:
        """What a caller is told of an exception no config should raise: its type and words,
        the secrets the daemon knows hidden (`Supervisor.redact`), on one line."""
        words = " ".join(self.sup.redact(str(exc)).split())
        words = words if len(words) <= 500 else words[:500] + "..."
        return f"{what} raised {type(exc).__name__}" + (f": {words}" if words else "") + " (the daemon's log has its traceback)"

    def _check_token_keeps_bind_safe(self, auth_token: str | None) -> None:
        if self.http_host is not None and not auth_token and not is_loopback(self.http_host):
            raise ConfigError(
                self.config_path,
                "supervisor.auth_token",
                f"the HTTP front is bound to the non-loopback address {self.http_host!r}, which needs "
                "an auth token; keep one (or bind 127.0.0.1 and restart)",
            )

    async def _apply(self, new: Config) -> dict[str, Any]:
        old_settings, new_settings = self.config.settings, new.settings
        settings = [
            field for field in (
                "http", "auth_token", "toolsets", "max_body_bytes", "drain_timeout", "stall_timeout", "max_sessions",
                "session_idle_timeout",
            )
            if getattr(new_settings, field) != getattr(old_settings, field)
        ]
        later = [field for field in settings if field in ("http", "max_body_bytes")]
        if later:
            log.warning("reload: %s take effect at the next start only", " and ".join(later))
        self.auth_header = _auth_header(new_settings.auth_token)
        if old_settings.auth_token and not new_settings.auth_token and self.http_host is not None:
            log.warning("reload: %s", no_token_warning(self.http_host, None))
        if "stall_timeout" in settings:
            stall_after(self.listening, new_settings.stall_timeout)
        if self.sessions is not None:  # for the sessions opened from now on
            self.sessions.max_sessions = new_settings.max_sessions
            self.sessions.session_idle_timeout = new_settings.session_idle_timeout
        failed: list[str] = []
        if "toolsets" in settings:
            try:
                await self.sup.set_toolsets(new_settings.toolsets)
            except Exception as exc:  # validated by load_config: not expected
                log.error("reload: toolsets: %s: %s", type(exc).__name__, exc)
                failed.append("supervisor.toolsets")

        def report(name: str, exc: Exception) -> None:
            log.error("reload: server %r: %s: %s", name, type(exc).__name__, exc)
            failed.append(name)

        self._log_start_warnings(new)
        self._leaving = frozenset(self.sup.servers) - {spec.name for spec in new.servers if spec.enabled}
        try:
            servers = await self.sup.reconcile(list(new.servers), on_error=report)
        finally:
            self._leaving = frozenset()
        self.config = new
        # Each started server's first attempt is done: those it left down are said.
        try:
            down = self._down(servers["added"] + servers["replaced"])
        except Exception:  # the reload is done: what it did is said all the same
            log.exception("reload: which servers are down could not be told")
            down = {}
        diff: dict[str, Any] = {**servers, "failed": failed, "settings": settings, "down": down}
        log.info("reloaded %s: %s", self.config_path or "the bundled default", diff)
        return diff

    def _log_start_warnings(self, new: Config) -> None:
        """What would keep a server the reload starts (a new or changed one) from starting
        here, as the daemon logs it at start (`start_warnings`), secrets hidden."""
        from ._preflight import start_warnings

        old = {spec.name: spec for spec in self.config.servers}
        starting = [spec for spec in new.servers if spec.enabled and old.get(spec.name) != spec]
        try:
            warnings = start_warnings(msgspec.structs.replace(new, servers=starting))
        except Exception:  # a warning that cannot be made stops no reload
            log.exception("reload: the start warnings could not be made")
            return
        for warning in warnings:
            log.warning("reload: %s", self.sup.redact(warning))

    def _down(self, names: list[str]) -> dict[str, str]:
        """Of the servers ``names``, those not connected now, each with its last exit (or
        last error; redacted, as the status is), or its state when it has neither."""
        nodes, down = [self.sup.status()], {}
        by_id = {}
        for node in nodes:
            by_id[node.id] = node
            nodes.extend(node.children)
        for name in names:
            try:
                if self.sup.link(name).conn is not None:
                    continue
            except Exception:  # no longer supervised: not down because of this reload
                continue
            node = by_id.get(f"connection:{name}")
            if node is None:
                down[name] = "not connected"
                continue
            said = node.last_exit or (node.detail or {}).get("last_error") or node.state
            down[name] = self.sup.redact(str(said))
        return down

    async def restart(self, name: str) -> ChildStatus:
        """Restart server ``name`` now (`Supervisor.restart_server`), serialized with reloads;
        once asked, it runs to completion even if whoever asked goes away. Raises
        ``KeyError`` for a server the config does not run."""
        self._refuse_while_stopping("restart")
        async with self._reload_lock:
            with trio.CancelScope(shield=True), self._cut_short_by_stop("restart"):
                status = await self.sup.restart_server(name)
        log.info("restarted server %r on request: %s", name, status.state)
        return status

    async def set_breaker(self, name: str, action: str, reason: str) -> ChildStatus:
        """`Supervisor.set_breaker`, at once: not behind a reload under way, which may wait
        long for a server it adds to connect. A server being replaced meanwhile refuses it
        (``RuntimeError``: its breaker is not running); a replacement that comes after it
        starts the server with a fresh breaker, as it always does."""
        status = await self.sup.set_breaker(name, action, reason)
        log.warning("breaker of server %r: %s on request (reason %r)", name, action, reason)  # %r: a line break forges no line
        return status

    async def reload_logged(self) -> None:
        """`reload` for SIGHUP: an invalid config is logged and refused; whatever else it
        raises is logged, never raised (it would end the daemon)."""
        try:
            await self.reload()
        except ConfigError as exc:
            log.error("reload refused, the old config keeps running: %s", exc)
        except DaemonStopping as exc:
            log.warning("%s", exc)
        except ReloadFailed as exc:  # logged with its traceback where it was raised
            log.error("reload failed: %s", exc)
        except Exception:
            log.exception("reload failed")


def no_token_warning(host: str, port: int | None) -> str:
    """What a loopback front without ``auth_token`` exposes: the loopback interface is no
    boundary between the accounts of one machine."""
    where = f"{host}:{port}" if port is not None else host
    return (
        f"no supervisor.auth_token: any account on this machine (any local user, any process) can use "
        f"the HTTP front on {where}: call every tool of every server as this daemon's user (uid {os.getuid()}), "
        "read /status (the servers' stderr tails and errors) and /metrics, and reload, restart or fence off "
        "servers; set supervisor.auth_token to keep them out (clients send 'Authorization: Bearer <token>', "
        "the CLI reads $MCP_SUPERVISOR_TOKEN)"
    )


def _auth_header(auth_token: str | None) -> bytes | None:
    return f"Bearer {auth_token}".encode() if auth_token else None


# -- the ASGI app ---------------------------------------------------------------------------


class DaemonApp:
    """The ASGI app (see the module docstring for the routes and guarantees)."""

    def __init__(
        self, daemon: Daemon, session_manager: StreamableHTTPSessionManager, security: TransportSecuritySettings
    ) -> None:
        self.daemon = daemon
        self.session_manager = session_manager
        self.guard = TransportSecurityMiddleware(security)
        #: The requests in flight on each MCP session, by the SDK's name for their streams.
        in_flight = getattr(session_manager, "in_flight", None)
        self.in_flight: InFlight = InFlight() if in_flight is None else in_flight

    async def _refused(self, scope: Any, send: Any) -> bool:
        """For the routes beside ``/mcp`` (which the SDK guards the same way): a foreign
        ``Host`` (DNS rebinding: a web page reading ``/status``, its stderr tails and errors)
        gets 421, a foreign ``Origin`` (a web page posting ``/restart/...`` or ``/reload``,
        which a browser sends cross-origin without asking) 403. True when refused."""
        refusal = await self.guard.validate_request(Request(scope))
        if refusal is not None:
            await respond_json(send, refusal.status_code, {"error": refusal.body.decode(errors="replace").lower()})
            return True
        if not origin_allowed(scope):
            await respond_json(send, 403, {"error": "forbidden origin"})
            return True
        return False

    async def _may_see_names(self, scope: Any) -> bool:
        """Whether the request may read what ``/status`` shows (server names): authorized,
        with a ``Host`` and ``Origin`` of its own."""
        if not self._authorized(scope) or not origin_allowed(scope):
            return False
        return await self.guard.validate_request(Request(scope)) is None

    def _authorized(self, scope: Any) -> bool:
        """Checked on every request against the daemon's current token, so a reload that
        sets, changes or removes it applies to the very next request."""
        expected = self.daemon.auth_header
        if expected is None:
            return True
        for key, value in scope.get("headers", []):
            if key.lower() == b"authorization":
                scheme, space, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":  # the scheme is case-insensitive (RFC 7235)
                    value = b"Bearer" + space + credentials
                return hmac.compare_digest(value, expected)
        return False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/") or "/"
        method = scope["method"]
        if path == "/healthz":
            await respond_json(send, 200, self.daemon.health())
            return
        if path == "/readyz":  # a probe: answered at once, token or not, starting or stopping
            readiness = self.daemon.readiness(detailed=await self._may_see_names(scope))
            await respond_json(send, 200 if readiness["ready"] else 503, readiness)
            return
        if not self.daemon.ready.is_set() and path not in ("/status", "/metrics"):
            await self.daemon.ready.wait()  # as the listen backlog held it before the front served
            if self.daemon.stopping and path == "/mcp":
                await respond_json(send, 503, {"error": "the daemon stopped before its servers had started"})
                return
        if not self._authorized(scope):
            await respond(
                send, 401, b'{"error": "unauthorized: send Authorization: Bearer <token>"}\n',
                headers=[(b"www-authenticate", b"Bearer")],
            )
            return
        if path == "/mcp":
            if not origin_allowed(scope):
                await respond_json(send, 403, {"error": "forbidden origin"})
                return
            with self.in_flight.request(scope) as claim:
                if method == "POST":
                    receive = await screen_client_body(receive, send, claim)
                    if receive is None:
                        return
                try:
                    await self.session_manager.handle_request(scope, receive, claim.watch(send))
                except UnexpectedMessageError:
                    # A handshake-era client cancelled a call and left: its notice's POST came
                    # as its session ended, the SDK found the session's stream closed and tried
                    # to answer a request whose connection is closed. No one is left to answer;
                    # an ERROR traceback per client that leaves would only raise false alarms.
                    log.debug("a request's client left before its answer could start: %s %s", method, path)
        elif await self._refused(scope, send):
            return
        elif method == "POST" and _is_control(path) and not own_origin(scope):
            # A page on another localhost port (a dev server) passes `origin_allowed`, and a
            # browser sends its text/plain or body-less POST without asking first.
            await respond_json(send, 403, {"error": "forbidden origin: the control routes take no request from a web page"})
            return
        elif path == "/status" and method == "GET":
            await respond(send, 200, msgspec.json.encode(self.daemon.sup.status()) + b"\n")
        elif path == "/metrics" and method == "GET":
            metrics_text = getattr(self.daemon.sup, "metrics_text", None)
            body = metrics_text() if metrics_text is not None else b""
            if inspect.isawaitable(body):
                body = await body
            if self.daemon.sessions is not None:
                body += render_front(self.daemon.sessions.open_sessions)
            await respond(send, 200, body, "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/reload" and method == "POST":
            try:
                diff = await self.daemon.reload()
            except ConfigError as exc:
                log.error("reload refused, the old config keeps running: %s", exc)
                await respond_json(send, 400, {"error": str(exc)})
                return
            except DaemonStopping as exc:
                await respond_json(send, 503, {"error": str(exc), "begun": exc.begun})
                return
            except ReloadFailed as exc:  # logged with its traceback
                await respond_json(send, 500, {"error": str(exc), "begun": exc.begun})
                return
            except Exception as exc:  # not expected either: whether anything changed is unknown
                log.exception("reload failed")
                await respond_json(send, 500, {"error": self.daemon._unexpected("the reload", exc)})
                return
            await respond_json(send, 200, diff)
        elif path.startswith("/restart/") and method == "POST":
            name = path.removeprefix("/restart/")
            try:
                status = await self.daemon.restart(name)
            except KeyError as exc:
                await respond_json(send, 404, {"error": exc.args[0]})
                return
            except RuntimeError as exc:  # being replaced or removed right now
                await respond_json(send, 409, {"error": str(exc)})
                return
            except DaemonStopping as exc:
                await respond_json(send, 503, {"error": str(exc), "begun": exc.begun})
                return
            await respond(send, 200, msgspec.json.encode(status) + b"\n")
        elif path.startswith("/breaker/") and method == "POST":
            name, _, action = path.removeprefix("/breaker/").rpartition("/")
            query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
            reason = query.get("reason", ["operator"])[0]
            if any(char < " " or char == "\x7f" for char in reason):  # it goes to the log and to callers
                await respond_json(send, 400, {"error": "the reason holds a control character (a line break, an ESC): "
                                                        "give it on one line of text"})
                return
            try:
                status = await self.daemon.set_breaker(name, action, reason)
            except KeyError as exc:
                await respond_json(send, 404, {"error": exc.args[0]})
                return
            except ValueError as exc:
                await respond_json(send, 400, {"error": str(exc)})
                return
            except RuntimeError as exc:  # being started or replaced right now
                await respond_json(send, 409, {"error": str(exc)})
                return
            await respond(send, 200, msgspec.json.encode(status) + b"\n")
        elif path in ("/status", "/metrics", "/reload") or path.startswith(("/restart/", "/breaker/")):
            await respond_json(send, 405, {"error": f"method {method} not allowed on {path}"})
        else:
            await respond_json(send, 404, {"error": f"no route {path}"})


def _is_control(path: str) -> bool:
    """Whether ``path`` is a control route: one that changes what runs."""
    return path == "/reload" or path.startswith(("/restart/", "/breaker/"))


class _SessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, each session given its own view of the event store: the
    SDK hands every session the one store, and names streams alike in each (see
    `BoundedEventStore`), so a resumed stream could replay another session's events.
    (``_admit_session``, ``_event_store`` and ``_server_instances`` are the SDK's private
    names, pinned by mcp 2.3 and by the daemon's tests of them.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The requests in flight on each session (`InFlight`): told here when the server
        #: answers one (as the event store is) and when a session ends.
        self.in_flight = InFlight()
        self.in_flight.is_open = lambda session: session in self._server_instances

    @property
    def open_sessions(self) -> int:
        return len(self._server_instances)

    async def _discard_session(self, session_id: str, transport: Any) -> None:
        try:
            await super()._discard_session(session_id, transport)
        finally:
            self.in_flight.session_ended(session_id)

    def _admit_session(self, requestor: Any) -> Any:
        """A new session; at ``max_sessions`` the one idle the longest is closed for it (as
        its idle timeout would: its client gets 404 and opens another, as the spec has it),
        if it has been idle a while (`_settled`: a client that lost a call's stream resumes
        it within that, and clients between two requests do not close each other's
        sessions). Otherwise (every session busy, or idle only a moment) the new one is
        refused (503). Before, sessions a client never ended locked every new client out
        until they idled out (30 minutes by default)."""
        limit = self.max_sessions
        if limit is not None:
            staying = [t for t in self._server_instances.values() if not _closing(t)]
            if len(staying) >= limit:
                now = trio.current_time()
                idle = [t for t in staying if (since := _idle_since(t)) is not None and now - since >= _settled(t)]
                if not idle:
                    return None
                idlest = min(idle, key=_idle_since)
                log.warning(
                    "%d sessions open (max_sessions): closing session %s, idle for %.0f s, for a new one",
                    len(staying), idlest.mcp_session_id, trio.current_time() - _idle_since(idlest),
                )
                idlest.idle_scope.cancel()
            self.max_sessions = None  # counted here, those closing left out
        try:
            transport = super()._admit_session(requestor)
        finally:
            self.max_sessions = limit
        if transport is not None and isinstance(self.event_store, BoundedEventStore):
            transport._event_store = _Answers(
                self.event_store.for_session(transport.mcp_session_id), self.in_flight, transport.mcp_session_id
            )
        return transport


class _Answers(EventStore):
    """A session's event store, which tells `InFlight` of each answer the server gives: the
    SDK stores every message it routes, an answer under its request's stream (``str(id)``),
    whether that request's client is still there or not."""

    def __init__(self, store: EventStore, in_flight: InFlight, session_id: str) -> None:
        self._store = store
        self._in_flight = in_flight
        self._session_id = session_id

    async def store_event(self, stream_id: Any, message: Any) -> Any:
        try:
            return await self._store.store_event(stream_id, message)
        finally:  # stored or not, the answer is out: its stream is free
            if isinstance(message, mcp_types.JSONRPCResponse | mcp_types.JSONRPCError):
                self._in_flight.answered(self._session_id, stream_id)

    async def replay_events_after(self, last_event_id: Any, send_callback: Any) -> Any:
        return await self._store.replay_events_after(last_event_id, send_callback)


def _settled(transport: Any) -> float:
    """How long a session must have been idle before it is closed for a new one: a tenth
    of its idle timeout, at most a minute."""
    return min(60.0, transport._idle_timeout / 10)


def _closing(transport: Any) -> bool:
    scope = transport.idle_scope
    return transport.is_terminated or (scope is not None and scope.cancel_called)


def _idle_since(transport: Any) -> float | None:
    """When ``transport``'s session last had a request in flight; None while it has one
    (or before it is served: the SDK's ``idle_scope`` and ``_idle_timeout``)."""
    scope, timeout = transport.idle_scope, transport._idle_timeout
    if scope is None or timeout is None or math.isinf(scope.deadline):
        return None
    return scope.deadline - timeout


def _hypercorn_config(host: str, port: int) -> Any:
    from hypercorn.config import Config as HypercornConfig

    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    # hypercorn's 100 overflowed when a few hundred clients connected at once (connections
    # reset before their first request): as many as the kernel allows.
    config.backlog = _somaxconn()
    return config


def _somaxconn() -> int:
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return max(128, int(f.read()))
    except (OSError, ValueError):
        return 4096


def listen_http(host: str, port: int) -> Any:
    """The listening sockets for ``host:port`` (hypercorn's ``Sockets``), bound now: so the
    daemon can say a port is taken before it starts any server. Raises `BindRefused`
    naming the address and the reason."""
    config = _hypercorn_config(host, port)
    try:
        sockets = config.create_sockets()
    except OSError as exc:
        raise BindRefused(f"cannot listen on {config.bind[0]}: {exc.strerror or exc}") from None
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
    return sockets


async def serve_http(
    daemon: Daemon,
    host: str,
    port: int,
    *,
    shutdown_trigger: Any,
    sockets: Any = None,
    graceful_timeout: float = 2.0,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the daemon's routes on ``host:port`` (on ``sockets`` from `listen_http` when
    given) until ``shutdown_trigger()`` returns.

    ``task_status.started(bound)`` reports the bound addresses once listening. After the
    trigger, hypercorn stops accepting, lets requests in flight finish (up to
    ``graceful_timeout``), then the MCP sessions are closed.
    """
    from hypercorn.trio.run import worker_serve
    from hypercorn.utils import wrap_app

    settings = daemon.config.settings
    if not settings.auth_token:
        log.warning("%s", no_token_warning(host, port))
    security = security_settings(host)
    manager = _SessionManager(
        app=daemon.gateway.server,
        event_store=BoundedEventStore(),  # a client whose SSE stream breaks resumes it
        security_settings=security,
        max_request_body_size=settings.max_body_bytes,
        max_sessions=settings.max_sessions,
        session_idle_timeout=settings.session_idle_timeout,
    )
    daemon.sessions = manager
    daemon.http_host = host  # a reload may not then remove the token of a non-loopback bind (if not told already)
    app = BodyDeadline(
        RequestBodyLimitMiddleware(DaemonApp(daemon, manager, security), settings.max_body_bytes),
        lambda: daemon.config.settings.stall_timeout,
    )
    config = _hypercorn_config(host, port)
    config.graceful_timeout = graceful_timeout
    if sockets is None:
        sockets = listen_http(host, port)
    daemon.listening = list(sockets.insecure_sockets)
    stall_after(daemon.listening, settings.stall_timeout)
    async with manager.run():
        await worker_serve(
            wrap_app(app, config.wsgi_max_body_size, "asgi"),
            config,
            sockets=sockets,
            shutdown_trigger=shutdown_trigger,
            task_status=task_status,
        )
