"""``python -m supervisor``: supervise MCP servers behind one MCP endpoint.

Commands (``python -m supervisor COMMAND --help`` for each):

- ``run [--config FILE] [--http HOST:PORT | --stdio]`` (the default): supervise the configured
  servers (without ``--config``: see below) and serve the aggregated MCP
  endpoint, over streamable HTTP at ``/mcp`` beside ``/status``, ``/metrics``, ``/healthz``,
  ``POST /reload``, ``POST /restart/<server>`` and ``POST /breaker/<server>/<action>``
  (default ``127.0.0.1:8765``), or over
  stdio with ``--stdio`` (logs then go to stderr only; stdout carries nothing but MCP).
- ``check [--config FILE]``: validate, print the resolved config with secrets redacted;
  exit 2 with "<file>: <key>: <reason>" when it is refused. A valid config that could not
  start a server here (a command not found, a ``cwd`` that is not a directory) gets a
  warning on stderr and still exits 0 (``run`` logs the same warnings).
- ``status [--url URL] [--stderr]``: the supervision tree of a running daemon. This and
  every command below sends ``$MCP_SUPERVISOR_TOKEN`` as its bearer token, if set; one no
  HTTP header can carry (a line break, not ASCII) exits 2 before connecting, unshown.
- ``reload [--url URL]``: make it re-read its config and apply it (as SIGHUP and ``POST
  /reload`` do), printing what changed; a refused config (its error printed) changes
  nothing and exits 1; a config the daemon failed to read for another reason (a bug: the
  traceback is in its log) changes nothing either and exits 2. A server it started (added
  or replaced) that is down after its first attempt is printed on a ``down:`` line with
  its last exit, and exits 3 (as ``status`` does for a child down).
- ``breaker [--url URL] SERVER open|disable|reset [--reason TEXT]``: the operator's hand on
  a server's circuit breaker: ``open`` fences it off (every call fails fast with
  ``CircuitOpen`` naming the reason; the server keeps running) until ``reset``.
- ``restart [--url URL] SERVER``: restart one of its servers now (no gap for its callers;
  brings back a server marked ``failed``); exit 0 once the new incarnation runs.
  ``reload``, ``restart`` and ``breaker`` wait for the answer as long as the daemon answers
  ``GET /healthz`` (a reload waits for its new servers to connect, however long their
  ``connect_timeout``); once it answers nothing for 10 s, or the connection breaks first,
  they exit 4: it was asked, whether it took effect is unknown (``status`` shows), as when
  a stopping daemon cut a reload or restart under way short; exit 1 when it cannot be
  reached, refuses (a stopping daemon refuses a new reload or restart: nothing was done),
  or does not answer as a daemon does.
- ``tools [--url URL]``: its tools, every page of the list (a server that pages without
  end, giving a cursor a second time or more than 1000 pages, is cut short: the tools read
  are printed, exit 1). ``call [--url URL] TOOL [key=value ... | --json ARGS]``:
  one tool call, printing the result. A ``key=value`` value is JSON when it parses, except
  where the tool's ``inputSchema`` wants a string (``text=42`` sends ``"42"``); ``NaN``,
  ``Infinity`` and ``1e400`` are no JSON (text as a value, refused in ``--json``).
- Every client command: what a server or the config says (names, errors, log lines,
  progress; not ``call``'s result, printed as it came) is shown on one line, its colours
  left out and any other control character escaped; Ctrl-C before the daemon answered is
  one line, exit 130.

Signals (``run``), handled from before the first server starts until the last one has
stopped: SIGINT/SIGTERM stop accepting new tool calls (and other requests for a server),
drain those in flight (up to the config's ``supervisor.drain_timeout``, 10 s by default; the
ones still running then are cancelled and answered with an error), stop the HTTP server,
then stop the children in reverse order; exit code 0 (while the servers are still starting:
the ones started so far are stopped, exit code 0). A second SIGINT/SIGTERM, at any point
after the first, forces the exit at once (code 1), SIGKILLing every server's process tree
first (no orphans even then). SIGHUP reloads the config like ``POST /reload`` (one while
starting, even one before the config was read: once started; from the last server's stop
to the exit it is ignored); SIGUSR1 logs the tree.

Without ``--config``, the seed's environment decides (``COMFYUI_MCP_*``: its servers, else
the bundled demo, and its settings), as `load_config` documents.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import html
import json
import logging
import math
import os
import re
import signal
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import trio

from protocol import ChildStatus

log = logging.getLogger("supervisor")

DEFAULT_URL = "http://127.0.0.1:8765"
TOKEN_ENV = "MCP_SUPERVISOR_TOKEN"

_COLORS = {"running": "32", "starting": "33", "restarting": "33", "failed": "31", "stopped": "90"}
_BREAKER_COLORS = {"closed": "32", "half_open": "33", "open": "31"}


def _paint(text: str, code: str | None, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


def _escaped(text: str) -> str:
    """``text`` on one line, painting nothing: a tab (or other space) is a space, any other
    character that is no printable one is written as its escape (``\\x1b``, ``\\n``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else " " if c.isspace() and c not in "\r\n" else repr(c)[1:-1] for c in text)


_CSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def _shown(text: Any) -> str:
    """A text the daemon reports (an error, a stderr line: a server's words) as the status
    shows it: on one line, painting nothing; a server's colours (CSI sequences) are left
    out, any other control character escaped."""
    return _escaped(_CSI.sub("", str(text)))


class _OneLine(logging.Filter):
    """A log record's message as `_shown` shows a server's words: on one line, painting
    nothing, so that a server's words in it (a stderr line, an error, a breaker reason)
    can neither forge a line of the log nor paint the operator's terminal. Its traceback,
    the log's own, stays as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format: the handler reports it as it would
            return True
        shown = _shown(message)
        if shown != message:
            record.msg, record.args = shown, None
        return True


def render_tree(node: ChildStatus, indent: str = "", *, color: bool = False, stderr: bool = False) -> str:
    """The status tree as text, in the supervisor vocabulary: state, restarts, breaker state,
    last error (and the stderr tail when ``stderr``). Each fact once: a connection's last
    error is not repeated when its last exit says it, nor a breaker's "connection down"
    reason when a line of its server already says it."""
    return _render(node, indent, color, stderr, ())


def _errors(node: ChildStatus) -> tuple[str | None, str | None]:
    """The last exit and the last error ``node``'s line shows: the last exit while it is not
    running; the last error unless that exit already says it (``ConnectionDied: <error>``)."""
    last_exit = _shown(node.last_exit) if node.last_exit and node.state != "running" else None
    last_error = (node.detail or {}).get("last_error")
    last_error = _shown(last_error) if last_error else None
    if last_error and last_exit and last_error in last_exit:
        last_error = None
    return last_exit, last_error


def _breaker_reason(reason: str, near: tuple[ChildStatus, ...]) -> str:
    """A breaker's reason as its line shows it: "connection down: <what a line near it
    says>" (its server's, its connection's) is "connection down", the rest told there."""
    told = reason.removeprefix("connection down: ")
    if told == reason:
        return reason
    said = sorted((text for each in near for text in _errors(each) if text), key=len, reverse=True)
    for text in said:
        if told.startswith(text):
            rest = told[len(text):]
            break
    else:
        return reason
    if rest.startswith("; failed for good") and any(each.state == "failed" for each in near):
        rest = ""  # the connection's line says it gave up, and how to bring it back
    return "connection down" + rest


def _render(node: ChildStatus, indent: str, color: bool, stderr: bool, near: tuple[ChildStatus, ...]) -> str:
    """``node``'s lines; ``near``: the nodes whose lines stand beside its own (its parent,
    its siblings)."""
    last_exit, last_error = _errors(node)
    parts = [_paint(node.state, _COLORS.get(node.state), color)]
    if node.strategy:
        parts.append(node.strategy)
    if node.restarts:
        parts.append(f"restarts={node.restarts}")
    if node.next_attempt_in is not None:
        parts.append(f"next attempt in {node.next_attempt_in:.1f} s")
    if last_exit:
        parts.append(f"last exit: {last_exit}")
    if node.state == "failed" and node.id.startswith("connection:"):
        parts.append(f"given up: `restart {node.id.removeprefix('connection:')}` starts it again")
    detail = node.detail or {}
    if "state" in detail:
        state = str(detail["state"])
        why = _breaker_reason(_shown(detail.get("reason") or ""), near)
        why = f" ({why})" if state != "closed" and why else ""
        if state != "closed" and isinstance(detail.get("retry_in"), (int, float)):
            why += f", next trial in {detail['retry_in']:.3g} s"  # when calls may go through again
        elif state != "closed" and isinstance(detail.get("connecting_for"), (int, float)):
            limit = detail.get("connect_timeout")
            why += f", connecting for {detail['connecting_for']:.3g} s" + (
                f" (up to connect_timeout {limit:g} s)" if isinstance(limit, (int, float)) else ""
            )
        parts.append("breaker " + _paint(state, _BREAKER_COLORS.get(state), color) + why)
    if "pid" in detail:
        # A remote server has no pid either: name its transport, not "in-process". A stdio
        # one without a pid has none running now (it exited; not started yet).
        transport = detail.get("transport")
        if detail["pid"] is not None:
            where = f"pid {detail['pid']}"
        elif transport in (None, "inproc"):
            where = "in-process"
        elif transport == "stdio":
            where = "no process"
        else:
            where = str(transport)
        # A connection that is down and never listed a tool has none to count.
        tools = f"{detail.get('tools')} tools, " if node.state == "running" or detail.get("tools") else ""
        parts.append(tools + where)
    unread = detail.get("unread_lists") or {}
    # A list read in part (invalid tools left out) says what was left out; one not read, only that.
    parts += [f"{name}: {_shown(note)}" for name, note in sorted(unread.items()) if note.startswith("left out")]
    if unreadable := sorted(name for name, note in unread.items() if not note.startswith("left out")):
        parts.append("could not read " + ", ".join(unreadable))
    if detail.get("oversized_dropped"):
        parts.append(f"{detail['oversized_dropped']} messages over max_message_bytes dropped")
    if last_error:
        parts.append("last error: " + _paint(last_error, "31", color))
    lines = [f"{indent}{_shown(node.id)}: {', '.join(parts)}"]
    if stderr and detail.get("stderr_tail"):
        lines += [f"{indent}  | {_shown(line)}" for line in detail["stderr_tail"]]
    for child in node.children:
        beside = (node, *(other for other in node.children if other is not child))
        lines.append(_render(child, indent + "  ", color, stderr, beside))
    return "\n".join(lines)


# -- run ------------------------------------------------------------------------------------


async def run(config_path: str | None, http: str | None, stdio: bool) -> int:
    """Run the daemon until a signal (or, with ``stdio``, the end of stdin). See the module
    docstring for the shutdown guarantees."""
    # First of all, before the imports and the config read (seconds on a loaded machine):
    # a SIGHUP from now on is recorded, not the default action that killed the daemon.
    early_hup = _EarlyHup()
    from ._config import ConfigError, load_config
    from ._facade import Supervisor
    from ._gateway import Gateway
    from ._http import BindRefused, Daemon, check_bind, listen_http, serve_http
    from ._preflight import start_warnings
    from ._redact import redacting_logs

    out = sys.stderr if stdio else sys.stdout
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host = port = sockets = None
    if not stdio:
        try:
            host, port = check_bind(http or config.settings.http, config.settings.auth_token)
            sockets = listen_http(host, port)  # a port in use is told now, before any server starts
        except BindRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    life = _Life(out)
    sup = Supervisor(config.servers, toolsets=config.settings.toolsets or None)
    gateway = Gateway(sup)
    daemon = Daemon(config, sup, gateway, config_path, http_host=host)
    sup.redactor.add_source(lambda: [daemon.config.settings.auth_token])  # a reload may change it
    for warning in start_warnings(config):  # they quote the config: its secrets hidden too
        log.warning("%s", sup.redact(warning))
    front_done = trio.Event()

    async def serve_front(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        # From before the servers start: an operator sees them start (`Daemon.ready`).
        try:
            await serve_http(daemon, host, port, sockets=sockets, shutdown_trigger=life.stop_serving.wait,
                             task_status=task_status)
        finally:
            front_done.set()

    # Signals are ours from before the first server starts until the last one stopped.
    # The log says no configured secret either (a remote's refusal, a URL's query).
    signals_we_take = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
    with early_hup.ignored_after(), trio.open_signal_receiver(*signals_we_take) as signals, \
            redacting_logs(sup.redact):
        if early_hup.asked:  # before the receiver opened: as one while starting (just below)
            log.info("SIGHUP while starting: the config is read again once started")
            life.reload_asked = True
        async with trio.open_nursery() as watching:
            watching.start_soon(_signal_loop, life, signals, watching)
            if not stdio:
                bound = await watching.start(serve_front)
                _say(f"serving MCP at {', '.join(b + '/mcp' for b in bound)}", out)
            with life.starting:
                async with sup:
                    daemon.ready.set()
                    _say(render_tree(sup.status()), out)
                    _say(f"tools: {', '.join(t.name for t in sup.list_tools())}", out)
                    life.ready(daemon, watching)
                    async with trio.open_nursery() as nursery:
                        await nursery.start(gateway.forward_list_changed)
                        if stdio:
                            await gateway.serve_stdio(
                                config.settings.max_body_bytes,
                                stop=life.stop_serving,
                                drain_timeout=lambda: daemon.config.settings.drain_timeout,
                            )
                            if not life.stop_serving.is_set():
                                log.info("the stdio client is gone (its stdin ended, or our stdout closed): stopping")
                        else:
                            await front_done.wait()  # the front stops (drained) before the servers do
                        nursery.cancel_scope.cancel()
                    log.info("stopping the servers")
            if not daemon.ready.is_set():  # stopped while starting: the front stops too
                daemon.begin_stop()
                daemon.ready.set()
                life.stop_serving.set()
                if not stdio:
                    await front_done.wait()
            watching.cancel_scope.cancel()
    if life.starting.cancelled_caught:
        log.info("stopped before it was ready")
    log.info("stopped")
    return 0


def _say(text: str, out: Any) -> None:
    """Print ``text`` for whoever runs the daemon; a stdout closed under it (``run | head``)
    does not end the daemon and its servers: it is logged once, and what could not be
    written is dropped (so the exit, once asked for, is 0 as usual)."""
    try:
        print(text, file=out, flush=True)
    except OSError as exc:
        if out not in _CLOSED_OUTPUTS:
            _CLOSED_OUTPUTS.append(out)
            log.warning("cannot write to the daemon's output any more (%s): the daemon goes on", exc)


#: The outputs `_say` found closed (each logged once).
_CLOSED_OUTPUTS: list[Any] = []


class _EarlyHup:
    """SIGHUP and SIGUSR1 outside the daemon's signal receiver, whose default actions kill
    the process: from its creation (the start of `run`) until the receiver opens, a SIGHUP
    is recorded (``asked``), for the daemon to reload once started, as it does one while
    its servers start, and SIGUSR1 (print the tree: there is none yet) is ignored; once the
    receiver closes (the servers stopped), both are ignored until the exit
    (`ignored_after`). One that comes before this exists (the interpreter starting, the
    imports of the package before ``run``) cannot be helped: it kills the process."""

    def __init__(self) -> None:
        self.asked = False
        signal.signal(signal.SIGHUP, self._record)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)

    def _record(self, signum: int, frame: Any) -> None:
        self.asked = True

    @contextlib.contextmanager
    def ignored_after(self) -> Iterator[None]:
        """Around the signal receiver (entered before it): on the way out, after the
        receiver has put this one's handler back (and redelivered to it what it had not
        handled), SIGHUP is ignored until the process exits."""
        try:
            yield
        finally:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)


class _Life:
    """Where the daemon is in its life, for the signal loop: starting (``daemon`` None; a
    stop cancels ``starting``), serving, or stopping (a second stop forces the exit)."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.daemon: Any = None
        self.starting = trio.CancelScope()
        self.stop_serving = trio.Event()
        self.stopping = False
        self.reload_asked = False

    def ready(self, daemon: Any, nursery: trio.Nursery) -> None:
        self.daemon = daemon
        if self.reload_asked:  # a SIGHUP while starting: the config read may be stale
            nursery.start_soon(daemon.reload_logged)


async def _signal_loop(life: _Life, signals: Any, nursery: trio.Nursery) -> None:
    """First SIGINT/SIGTERM: drain then stop serving (while starting: stop what started);
    second: exit at once. SIGHUP: reload (once ready). SIGUSR1: print the tree."""
    async for signum in signals:
        name = signal.Signals(signum).name
        daemon = life.daemon
        if signum == signal.SIGUSR1:
            if daemon is not None:
                _say(render_tree(daemon.sup.status()), life.out)
        elif signum == signal.SIGHUP:
            if life.stopping:
                log.warning("SIGHUP ignored: stopping")
            elif daemon is None:
                log.info("SIGHUP while starting: the config is read again once started")
                life.reload_asked = True
            else:
                nursery.start_soon(daemon.reload_logged)
        elif life.stopping:
            from actors import kill_every_server_now  # loaded by now: the servers run on it

            killed = kill_every_server_now()  # os._exit skips the shutdown that would reap them
            log.warning("second %s: forcing the exit (%d stdio servers killed, each with its process tree)", name, killed)
            logging.shutdown()
            os._exit(1)
        elif daemon is None:
            life.stopping = True
            log.info("received %s while starting: stopping the servers started so far", name)
            life.starting.cancel()
        else:
            life.stopping = True
            log.info("received %s: draining %d requests in flight", name, daemon.gateway.inflight)
            daemon.begin_stop()  # draining; reloads and restarts refused or cut short
            nursery.start_soon(_drain_then_stop, daemon, life.stop_serving)


async def _drain_then_stop(daemon: Any, stop_serving: trio.Event) -> None:
    """Wait (up to the config's ``drain_timeout``) for the requests in flight upstream, cut
    off those still running (`Gateway.drain`: each is answered with an error), then stop
    serving."""
    had_requests = daemon.gateway.inflight > 0
    await daemon.gateway.drain(daemon.config.settings.drain_timeout)
    if had_requests:
        await trio.sleep(0.5)  # let the last responses (and a client's follow-up tools/list) through
    stop_serving.set()


# -- check ----------------------------------------------------------------------------------


def check(config_path: str | None) -> int:
    from ._config import ConfigError, Substitutions, load_config, redacted
    from ._preflight import start_warnings

    substitutions = Substitutions()  # what ${VAR} took from the environment: shown nowhere
    try:
        config = load_config(config_path, substitutions=substitutions)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(redacted(config, substitutions), indent=2))
    for warning in start_warnings(config):
        print(f"warning: {substitutions.hide(warning)}", file=sys.stderr)
    return 0


# -- clients of a running daemon ------------------------------------------------------------


def _headers() -> dict[str, str]:
    token = os.environ.get(TOKEN_ENV)
    return {"Authorization": f"Bearer {token}"} if token else {}


def _token_problem() -> str | None:
    """Why ``$MCP_SUPERVISOR_TOKEN`` cannot be sent as a bearer token, without its value
    (the HTTP layer's own refusal quotes the whole header)."""
    token = os.environ.get(TOKEN_ENV) or ""
    if not token.isascii():
        return "is not ASCII"
    if any(not c.isprintable() for c in token):
        return "holds a line break or a control character (read from a file with its line ending?)"
    return None


def _unauthorized() -> str:
    """What to do about a 401 from the daemon: its ``auth_token`` is set, and the CLI sends
    ``$MCP_SUPERVISOR_TOKEN`` (unset, or not that token)."""
    if os.environ.get(TOKEN_ENV):
        return f"the daemon refused ${TOKEN_ENV}: it is not the token its config's supervisor.auth_token sets"
    return f"the daemon wants a token: set ${TOKEN_ENV} to its config's supervisor.auth_token"


def status(url: str, show_stderr: bool) -> int:
    import httpx2

    try:
        response = httpx2.get(url.rstrip("/") + "/status", headers=_headers(), timeout=10.0)
    except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
        print(f"error: cannot reach the daemon at {url}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted before the daemon answered", file=sys.stderr)
        return 130
    if response.status_code == 401:
        print(f"error: {url}/status answered 401: {_unauthorized()}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"error: {url}/status answered {response.status_code}: {_said(response)}", file=sys.stderr)
        return 1
    tree = _decoded(response, ChildStatus)
    if tree is None:
        return 1
    print(render_tree(tree, color=sys.stdout.isatty(), stderr=show_stderr))
    down = _down(tree)
    if down:
        print(f"{len(down)} down: {', '.join(down)}", file=sys.stderr)
        return DEGRADED
    return 0


#: ``status``'s exit code when the daemon answered but a child of its tree is down, apart
#: from 1 (the daemon cannot be reached or answered wrongly), so a monitor can tell them apart.
DEGRADED = 3


def _down(tree: ChildStatus) -> list[str]:
    """The paths of the children that are down (``restarting`` or ``failed``). ``starting``
    is on its way up, ``stopped`` was asked for (or a temporary child that ended)."""
    down, nodes = [], [(tree.id, tree)]
    for path, node in nodes:
        if node.state in ("restarting", "failed"):
            down.append(path)
        nodes.extend((f"{path}/{child.id}", child) for child in node.children)
    return down


#: The exit code of `reload`, `restart` and `breaker` when the request went out and no answer
#: came back (the daemon stopped answering, the connection broke, a 5xx): whether it was
#: applied is unknown, as 1 (refused, nothing changed) or 0 would claim. A daemon finishes
#: a validated reload and a restart once asked, whoever goes away; `status` shows where it is.
UNKNOWN = 4

#: The exit code of `reload` when the daemon failed where no config should make it fail (a
#: bug, its traceback in the daemon's log) before anything changed: the old config keeps
#: running, as with a refused config (1), but retrying the same config will not help.
FAILED = 2

#: How long `reload`, `restart` and `breaker` wait on a daemon that answers nothing at all,
#: not even ``GET /healthz`` (as `status` waits for ``/status``). Their own answer has no
#: fixed deadline: a reload or a restart waits for its servers to connect (``connect_timeout``
#: each, any length) and behind a reload under way.
_SILENCE = 10.0


#: What decoding an answer may raise: msgspec's error, or ``RecursionError`` for JSON nested
#: too deep (in a field the type skips, even), which a stranger at ``--url`` may send.
_UNREADABLE = (msgspec.DecodeError, RecursionError)


class _Health(msgspec.Struct):
    """What ``GET /healthz`` answers, as much as tells a live daemon."""

    ok: bool
    servers: int


class _Refusal(msgspec.Struct):
    """A daemon's refusal (4xx): ``{"error": "..."}``; a stopping daemon's 503 says whether
    the reload or restart was ``begun`` (cut short) or not (refused: nothing was done)."""

    error: str
    begun: bool | None = None


def _post(url: str, path: str, what: str, refused: str | None = None) -> Any:
    """``POST`` to the daemon, waiting for its answer as long as the daemon is alive (it
    answers ``GET /healthz`` at least every `_SILENCE` s). The 200 response; else the exit
    code once the failure is printed: 1 when nothing was done (unreachable, refused, no
    daemon answering as one), `UNKNOWN` when the request went out and what became of it
    cannot be told. ``refused``: what a 400 from the daemon means, if not just "failed"."""
    try:
        return trio.run(_post_watched, url, path, what, refused)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:  # trio's nursery groups the interrupt
        if isinstance(exc, BaseExceptionGroup) and exc.split(KeyboardInterrupt)[1] is not None:
            raise
        print(f"interrupted before the daemon answered: `{what}` may still take effect; `status` shows what runs",
              file=sys.stderr)
        return 130


async def _post_watched(url: str, path: str, what: str, refused: str | None) -> Any:
    import httpx2

    base = url.rstrip("/")
    heard = False  # from the daemon's /healthz, ever
    silent = False

    async def alive(http: Any) -> bool:
        try:
            response = await http.get(base + "/healthz")
            msgspec.json.decode(response.content, type=_Health)
        except (httpx2.HTTPError, httpx2.InvalidURL, *_UNREADABLE):
            return False
        return response.status_code == 200

    async def watch(http: Any, cancel_scope: trio.CancelScope) -> None:
        nonlocal heard, silent
        while True:
            with trio.move_on_after(_SILENCE) as waited:
                while not await alive(http):
                    await trio.sleep(0.5)
            if waited.cancelled_caught:
                silent = True
                cancel_scope.cancel()
                return
            heard = True
            await trio.sleep(_SILENCE / 5)

    async def is_daemon() -> bool:
        async with httpx2.AsyncClient(timeout=_SILENCE) as http:
            return await alive(http)

    async with httpx2.AsyncClient(headers=_headers(), timeout=httpx2.Timeout(_SILENCE, read=None)) as http:
        response = broke = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, http, nursery.cancel_scope)
            try:
                response = await http.post(base + path)
            except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.UnsupportedProtocol, httpx2.InvalidURL) as exc:
                print(f"error: cannot reach the daemon at {url}: {exc}", file=sys.stderr)  # nothing was sent
                return 1
            except httpx2.HTTPError as exc:
                broke = exc
            finally:
                nursery.cancel_scope.cancel()
    unknown = f"whether `{what}` took effect is unknown; `status` shows what runs"
    if silent:
        if heard:
            print(f"error: the daemon at {url} stopped answering (nothing on GET /healthz for {_SILENCE:g} s) "
                  f"before it answered: {unknown}", file=sys.stderr)
        else:
            print(f"error: nothing at {url} answered within {_SILENCE:g} s, not even GET /healthz (a stopped or "
                  f"wedged daemon, or none): it was asked, {unknown}", file=sys.stderr)
        return UNKNOWN
    if response is None:
        print(f"error: {url}: the connection broke before the daemon answered ({type(broke).__name__}: {broke}): "
              f"{unknown}", file=sys.stderr)
        return UNKNOWN
    if response.status_code == 401:  # not what `what` says went wrong: nothing was tried
        print(f"error: {url}: 401: {_unauthorized()}", file=sys.stderr)
        return 1
    if response.status_code == 200:
        return response
    try:
        refusal = msgspec.json.decode(response.content, type=_Refusal)
    except _UNREADABLE:
        refusal = None
    reason = refusal.error if refusal is not None else None
    if response.status_code in (500, 503) and refusal is not None and refusal.begun is not None:
        # 503: the daemon stops; 500: it failed where no config should make it (a bug)
        if not refusal.begun:  # refused before anything was done
            print(f"error: {what}: {response.status_code}: {_shown(refusal.error)}: nothing was done", file=sys.stderr)
            return 1 if response.status_code == 503 else FAILED
        # cut short: told so even when the daemon is gone by the time it is asked if it lives
        print(f"error: {url}: {what}: {response.status_code}: {_shown(refusal.error)}: {unknown}", file=sys.stderr)
        return UNKNOWN
    if response.status_code >= 500 and await is_daemon():  # it failed on the way: done in part?
        print(f"error: {url}: {what}: {response.status_code}: {_shown(reason) if reason else _said(response)}: {unknown}",
              file=sys.stderr)
        return UNKNOWN
    if reason is None or response.status_code >= 500:
        print(f"error: POST {base}{path} answered {response.status_code}: {_said(response)} (not as an "
              "mcp-supervisor daemon does)", file=sys.stderr)
        return 1
    told = refused if refused is not None and response.status_code == 400 else what
    print(f"error: {told}: {response.status_code}: {_shown(reason)}", file=sys.stderr)
    return 1


_MARKUP = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>", re.I | re.S)


def _said(response: Any) -> str:
    """What a response that is no daemon's answer says, on one line (`_shown`): a web page's
    first words, not its markup."""
    text = response.text
    if "html" in response.headers.get("content-type", "").lower() or text.lstrip()[:1] == "<":
        text = html.unescape(_MARKUP.sub(" ", text))
    text = _shown(" ".join(text.split()))
    return text if len(text) <= 200 else text[:200] + "..."


def _decoded(response: Any, type_: Any) -> Any:
    """The daemon's answer as ``type_``, or None once it is said that it is not one."""
    try:
        return msgspec.json.decode(response.content, type=type_)
    except _UNREADABLE as exc:
        print(f"error: {response.url} did not answer as an mcp-supervisor daemon does ({exc})", file=sys.stderr)
        return None


#: The ``supervisor`` settings a reload reports changed but does not apply: the HTTP front
#: was built with them (see `Daemon.reload`).
_AT_NEXT_START = ("http", "max_body_bytes")


class _ReloadDiff(msgspec.Struct):
    """What ``POST /reload`` answers (`Daemon.reload`): server names, and setting names."""

    added: list[str]
    removed: list[str]
    updated: list[str]
    replaced: list[str]
    unchanged: list[str]
    failed: list[str]
    settings: list[str]
    #: The added or replaced servers down after their first attempt: their last exits.
    down: dict[str, str] = {}


def reload(url: str) -> int:
    """``POST /reload``: print what changed; exit 0 when all of it applied, 1 when the
    config was refused (the old one keeps running), a server could not be applied, or
    nothing was done (no daemon reached); `DEGRADED` when a server it started (added or
    replaced) is down after its first attempt (each printed on a ``down:`` line with its
    last exit); `FAILED` when the daemon failed before anything changed, not for the
    config's sake; `UNKNOWN` when it cannot be told."""
    response = _post(url, "/reload", "reload", "reload refused, the old config keeps running")
    if isinstance(response, int):
        return response
    diff = _decoded(response, _ReloadDiff)
    if diff is None:
        return 1
    rows = [
        ("added", diff.added),
        ("removed", diff.removed),
        ("updated in place", diff.updated),
        ("replaced", diff.replaced),
        ("unchanged", diff.unchanged),
        ("settings changed", [
            f"{name} (takes effect at the next start only)" if name in _AT_NEXT_START else name
            for name in diff.settings
        ]),
        ("FAILED", diff.failed),
    ]
    for label, names in rows:
        if names:  # a server's name is the config's: shown as the status shows it
            print(f"{label}: {', '.join(_shown(name) for name in names)}")
    for name, last_exit in diff.down.items():
        print(f"down: {_shown(name)} (last exit: {_shown(last_exit)})")
    return 1 if diff.failed else DEGRADED if diff.down else 0


def breaker(url: str, server: str, action: str, reason: str) -> int:
    """``POST /breaker/<server>/<action>``: print the server's subtree; exit 0 once done."""
    path = f"/breaker/{urllib.parse.quote(server, safe='')}/{action}?{urllib.parse.urlencode({'reason': reason})}"
    response = _post(url, path, f"breaker {_shown(server)} {action}")
    if isinstance(response, int):
        return response
    node = _decoded(response, ChildStatus)
    if node is None:
        return 1
    print(render_tree(node, color=sys.stdout.isatty()))
    return 0


def restart(url: str, server: str) -> int:
    """``POST /restart/<server>``; exit 0 once the new incarnation is running."""
    response = _post(url, f"/restart/{urllib.parse.quote(server, safe='')}", f"restart {_shown(server)}")
    if isinstance(response, int):
        return response
    node = _decoded(response, ChildStatus)
    if node is None:
        return 1
    print(render_tree(node, color=sys.stdout.isatty(), stderr=False))
    nodes = [node]
    for each in nodes:
        nodes.extend(each.children)
    return 0 if all(each.state == "running" for each in nodes) else 1


_CLIENT_TIMEOUT = 60.0
"""How long the ``tools`` and ``call`` commands wait on a daemon that sends nothing (a call
that runs longer is not cut: its answer's stream carries a ping every 15 s)."""


def _client(url: str, statuses: list[int], timeout: float, logging_callback: Any = None) -> Any:
    """An MCP client of the daemon at ``url``; the HTTP status of each answer to a POST (a
    request or notification it sends) is added to ``statuses`` (the SDK turns a 401 into
    "Server returned an error response", and `_client_command` says why instead). With
    ``logging_callback``, it asks for the servers' log lines at info and above."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def seen(response: Any) -> None:
        if response.request.method == "POST":  # not the GET of the server's own event stream
            statuses.append(response.status_code)

    endpoint = url.rstrip("/") + "/mcp"
    http = httpx2.AsyncClient(headers=_headers(), timeout=timeout, event_hooks={"response": [seen]})
    return Client(
        streamable_http_client(endpoint, http_client=http),
        logging_callback=logging_callback,
        log_level="info" if logging_callback is not None else None,
    )


#: How many pages of ``tools/list`` the ``tools`` and ``call`` commands read at most: a
#: server that pages without end (a new cursor each time) is not followed forever.
_MAX_PAGES = 1000


async def _listed_tools(client: Any) -> tuple[list[Any], str | None]:
    """Every tool the server lists, page after page (``nextCursor``), and why the listing
    stopped short, if it did: a cursor given a second time (the same pages would come
    again, forever), or more than `_MAX_PAGES` pages; the tools of the pages read so far."""
    tools: list[Any] = []
    given: dict[str, int] = {}  # a cursor: the page that gave it
    cursor = None
    for number in range(1, _MAX_PAGES + 1):
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            return tools, None
        if cursor in given:
            return tools, (f"page {number} gave the cursor page {given[cursor]} gave (the same pages would "
                           f"come again, without end); {number} pages read")
        given[cursor] = number
    return tools, f"it had more pages after {_MAX_PAGES}; {_MAX_PAGES} pages read"


async def _tools(connect: Callable[[], Any]) -> int:
    """One line per tool, whatever its name and description hold: the name, quoted as
    Python would (``'a\\nb'``) when it holds a character that is no printable one (it could
    forge a line of the listing, or paint the terminal); the description's first line,
    such characters escaped. Every page of the list (``nextCursor``); a listing that stops
    short (`_listed_tools`) prints what it got, says so on stderr and exits 1."""
    async with connect() as client:
        tools, short = await _listed_tools(client)
    for tool in tools:
        summary = (tool.description or "").strip().splitlines()
        name = tool.name if tool.name.isprintable() else repr(tool.name)
        print(f"{name}: {_escaped(summary[0]) if summary else ''}")
    if short:
        print(f"error: the list of tools is incomplete: {short}", file=sys.stderr)
        return 1
    return 0


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400: no JSON can carry it (the SDK would send null)
        raise ValueError(text)
    return number


def _not_json(constant: str) -> Any:
    raise ValueError(constant)  # NaN, Infinity: Python's extension, not JSON


def _parse_value(text: str) -> Any:
    """``text`` as JSON, or the text itself when it is not JSON (nor a finite number)."""
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_not_json)
    except ValueError:
        return text


_JSON_TYPES: dict[type, set[str]] = {
    bool: {"boolean"}, int: {"integer", "number"}, float: {"number"}, type(None): {"null"},
    list: {"array"}, dict: {"object"}, str: {"string"},
}


def typed_arguments(pairs: dict[str, str], input_schema: dict[str, Any] | None) -> dict[str, Any]:
    """``key=value`` pairs as the tool takes them: a value is JSON when it parses, except
    where the tool's ``inputSchema`` types that property as a string and not as what the
    JSON is (``text=42`` stays ``"42"`` for a string ``text``; ``a=1`` is 1 for a number)."""
    properties = (input_schema or {}).get("properties")
    arguments: dict[str, Any] = {}
    for key, text in pairs.items():
        value = _parse_value(text)
        declared = (properties.get(key) if isinstance(properties, dict) else None) or {}
        types = declared.get("type") if isinstance(declared, dict) else None
        if isinstance(types, str):
            types = [types]
        allowed = {t for t in types if isinstance(t, str)} if isinstance(types, list) else set()
        if "string" in allowed and not (_JSON_TYPES[type(value)] & allowed):
            value = text
        arguments[key] = value
    return arguments


async def _input_schema(client: Any, tool: str) -> dict[str, Any] | None:
    """``tool``'s inputSchema as the daemon lists it, or None when it lists no such tool (or
    not in the pages read: `_listed_tools`; that is said on stderr, and the call goes on)."""
    tools, short = await _listed_tools(client)
    for listed in tools:
        if listed.name == tool:
            return listed.input_schema
    if short:
        print(f"warning: {tool} is not in the list of tools, which is incomplete ({short}): the values are typed "
              "without its schema", file=sys.stderr)
    return None


async def _call(connect: Callable[..., Any], tool: str, arguments: dict[str, Any] | None, pairs: dict[str, str]) -> int:
    """One tool call: its result on stdout; what the server says meanwhile (progress, log
    lines at info and above) on stderr, as it comes, so a long call shows it is alive, each
    on one line painting nothing, as the status shows a server's words (`_shown`); a log
    line's data that is no text is its JSON. The result is printed as it came (it is data)."""
    from mcp import MCPError

    async def said(params: Any) -> None:
        where = f" {_shown(params.logger)}" if params.logger else ""
        data = params.data if isinstance(params.data, str) else json.dumps(params.data, ensure_ascii=False)
        print(f"[{params.level}{where}] {_shown(data)}", file=sys.stderr, flush=True)

    async def progressed(progress: float, total: float | None, message: str | None) -> None:
        done = f"{progress:g}/{total:g}" if total is not None else f"{progress:g}"
        print(f"[progress {done}]" + (f" {_shown(message)}" if message else ""), file=sys.stderr, flush=True)

    async with connect(logging_callback=said) as client:
        if arguments is None:
            arguments = typed_arguments(pairs, await _input_schema(client, tool) if pairs else None)
        try:
            result = await client.call_tool(tool, arguments, progress_callback=progressed)
        except MCPError as exc:
            print(f"error {exc.code}: {_shown(exc.message)}", file=sys.stderr)
            return 1
    for block in result.content:
        text = getattr(block, "text", None)
        print(text if text is not None else block.model_dump_json(by_alias=True, exclude_none=True))
    structured = result.structured_content
    if structured is not None and not _already_said(result.content, structured):
        print(json.dumps(structured))
    return 1 if result.is_error else 0


def _already_said(content: list[Any], value: Any) -> bool:
    """Whether the text blocks of ``content`` already say the structured ``value``, so
    printing it too would say it twice: one of them is its JSON (as the spec asks of a tool
    that returns structured content), or ``value`` is ``{"result": v}`` (how the SDK wraps a
    tool's answer that is no object) and the blocks are ``v``, or its items one per block."""
    texts = [block.text for block in content if getattr(block, "type", None) == "text"]
    if any(_says(text, value) for text in texts):
        return True
    if not (isinstance(value, dict) and list(value) == ["result"]) or len(texts) != len(content):
        return False
    inner = value["result"]
    items = inner if isinstance(inner, list) else [inner]
    return (len(texts) == 1 and _says(texts[0], inner)) or (
        len(texts) == len(items) > 0 and all(_says(text, item) for text, item in zip(texts, items))
    )


def _says(text: str, value: Any) -> bool:
    """Whether ``text`` is ``value``: the string itself, or its JSON (compared as JSON:
    ``true`` is not ``1``)."""
    if isinstance(value, str) and text == value:
        return True
    try:
        parsed = json.loads(text)
    except ValueError:
        return False
    return json.dumps(parsed, sort_keys=True) == json.dumps(value, sort_keys=True)


def _client_command(fn: Any, url: str, *args: Any, timeout: float = _CLIENT_TIMEOUT, cut: str = "") -> int:
    """Run one MCP client command, ``fn(connect, *args)`` (``connect()`` makes the client);
    a daemon that cannot be reached, or says nothing for ``timeout`` s, is one line, exit 1;
    an interrupt (Ctrl-C) is one line too, saying ``cut`` (what it may have left done), exit 130.
    An error the endpoint answered with an HTTP error status (a URL that is no MCP endpoint,
    or one ending in ``/mcp`` already) names the endpoint and the status; an endpoint's words
    are shown as the status shows a server's (`_shown`)."""
    statuses: list[int] = []
    try:
        return trio.run(fn, functools.partial(_client, url, statuses, timeout), *args)
    except BrokenPipeError:  # printing into a closed stdout (`| head`): `main` ends quietly
        raise
    except Exception as exc:  # the SDK wraps transport errors in exception groups
        if 401 in statuses:
            print(f"error: {url}: 401: {_unauthorized()}", file=sys.stderr)
            return 1
        import httpx2
        from mcp import MCPError

        leaf = exc
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, httpx2.TimeoutException):  # its text is empty
            print(f"error: {url}: the daemon did not answer within {timeout:g} s ({type(leaf).__name__})",
                  file=sys.stderr)
        elif isinstance(leaf, MCPError) and statuses and statuses[-1] >= 400:  # the SDK's, or the endpoint's, words
            print(f"error: {url.rstrip('/')}/mcp answered {statuses[-1]}: {_shown(leaf)}", file=sys.stderr)
        else:
            print(f"error: {url}: {type(leaf).__name__}: {_shown(leaf)}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:  # trio's nursery groups the interrupt
        if isinstance(exc, BaseExceptionGroup) and exc.split(KeyboardInterrupt)[0] is None:
            raise
        print(f"interrupted before the daemon answered{cut}", file=sys.stderr)
        return 130


# -- argparse -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m supervisor",
        description="Supervise MCP servers behind one MCP endpoint (default command: run).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_p = sub.add_parser("run", help="supervise and serve (the default command)")
    run_p.add_argument(
        "--config", help="an mcpServers JSON or TOML file (default: the servers COMFYUI_MCP_* name, else the bundled demo)"
    )
    mode = run_p.add_mutually_exclusive_group()
    mode.add_argument("--http", metavar="HOST:PORT", help="HTTP bind (default: the config's, else 127.0.0.1:8765)")
    mode.add_argument("--stdio", action="store_true", help="serve MCP over stdin/stdout instead of HTTP")
    check_p = sub.add_parser("check", help="validate a config and print it with secrets redacted")
    check_p.add_argument("--config", help="the config file (default: as for run)")
    url_help = f"the daemon's base URL (default {DEFAULT_URL}); the token, if any, comes from ${TOKEN_ENV}"
    status_p = sub.add_parser(
        "status", help="print a running daemon's supervision tree; exit 3 when a child of it is down (restarting or failed)"
    )
    status_p.add_argument("--url", default=DEFAULT_URL, help=url_help)
    status_p.add_argument("--stderr", action="store_true", help="show each server's stderr tail")
    tools_p = sub.add_parser("tools", help="list a running daemon's tools")
    tools_p.add_argument("--url", default=DEFAULT_URL, help=url_help)
    reload_p = sub.add_parser(
        "reload", help="make a running daemon re-read its config and apply it; exit 1 when it refused the config "
        "(nothing changed), 3 when a server it started is down after its first attempt, 2 when it failed before "
        "changing anything for another reason (its log says why), 4 when whether it took effect is unknown",
    )
    reload_p.add_argument("--url", default=DEFAULT_URL, help=url_help)
    restart_p = sub.add_parser("restart", help="restart one server of a running daemon now")
    restart_p.add_argument("--url", default=DEFAULT_URL, help=url_help)
    restart_p.add_argument("server", help="the server's name, as `status` shows it")
    breaker_p = sub.add_parser("breaker", help="force a server's circuit breaker open, disable it, or reset it")
    breaker_p.add_argument("--url", default=DEFAULT_URL, help=url_help)
    breaker_p.add_argument("server", help="the server's name, as `status` shows it")
    breaker_p.add_argument(
        "action", choices=["open", "disable", "reset"],
        help="open: every call fails fast (CircuitOpen) until reset, the server keeps running; "
        "disable: every call goes through, nothing counted; reset: closed, fresh counts",
    )
    breaker_p.add_argument("--reason", default="operator", help="shown to callers and in the status")
    call_p = sub.add_parser("call", help="call one tool on a running daemon")
    call_p.add_argument("--url", default=DEFAULT_URL, help=url_help)
    call_p.add_argument("tool", help="the tool name, as `tools` lists it")
    call_p.add_argument(
        "args", nargs="*", metavar="key=value",
        help="arguments; a value is JSON when it parses, text where the tool's schema wants a string",
    )
    call_p.add_argument(
        "--json", dest="json_args", metavar="ARGS",
        help="the arguments as one JSON object (also taken as the only argument after the tool)",
    )
    return parser


#: The exit code of a command whose stdout was closed under it (``... | head``): what a
#: shell reports of a process SIGPIPE ended (128 + 13), as ``set -o pipefail`` scripts
#: expect of a pipeline's writer; 1 (Python's own on EPIPE) says something else here.
STDOUT_CLOSED = 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    """Run one command; a stdout closed under it (its reader gone: ``| head``) ends it
    quietly, exit `STDOUT_CLOSED`, as Python's note on SIGPIPE has it (the
    `signal` module's docs): not SIGPIPE's default action, which would end the daemon
    when a socket breaks, but stdout pointed at ``/dev/null`` so that nothing is left to
    write to it at the exit."""
    try:
        code = _command(argv)
        sys.stdout.flush()  # what is left to write: a closed stdout is told here, not at the exit
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return STDOUT_CLOSED
    return code


def _command(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"run", "check", "status", "tools", "call", "reload", "restart", "breaker"}
    if not argv or (argv[0] not in commands and argv[0] not in ("-h", "--help")):
        argv.insert(0, "run")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO if args.command == "run" else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_OneLine())
    # The HTTP client logs every request to a remote server at INFO ("HTTP Request: POST
    # ..."): in a soak, 1,705 of the log's lines. Its warnings still show.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    if args.command == "run":
        return trio.run(run, args.config, args.http, args.stdio)
    if args.command == "check":
        return check(args.config)
    if (problem := _token_problem()) is not None:
        print(f"error: ${TOKEN_ENV} {problem}; its value is not shown", file=sys.stderr)
        return 2
    if args.command == "status":
        return status(args.url, args.stderr)
    if args.command == "reload":
        return reload(args.url)
    if args.command == "restart":
        return restart(args.url, args.server)
    if args.command == "breaker":
        return breaker(args.url, args.server, args.action, args.reason)
    if args.command == "tools":
        return _client_command(_tools, args.url)
    if args.command == "call":
        if args.json_args is None and len(args.args) == 1 and args.args[0].lstrip().startswith("{"):
            args.json_args, args.args = args.args[0], []  # `call TOOL '{...}'`: what --json takes
        if args.json_args is not None and args.args:
            parser.error("call: give key=value arguments or --json, not both")
        arguments, pairs = None, {}
        if args.json_args is not None:
            try:
                arguments = json.loads(args.json_args, parse_float=_finite, parse_constant=_not_json)
            except ValueError as exc:
                parser.error(f"call: the arguments are not valid JSON: {exc}")
            if not isinstance(arguments, dict):
                parser.error("call: the arguments must be one JSON object")
        for item in args.args:
            key, sep, value = item.partition("=")
            if not sep:
                parser.error(f"call: {item!r} is not key=value")
            if key in pairs:  # a typo, more often than a wish for the last one
                parser.error(f"call: {key!r} is given twice")
            pairs[key] = value
        return _client_command(_call, args.url, args.tool, arguments, pairs,
                               cut=f": the call of {_shown(args.tool)} may have taken effect, in part or whole")
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
