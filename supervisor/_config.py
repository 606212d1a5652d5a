"""Load, validate and explain the supervisor's config: `load_config`, `redacted`.

The file is the ``mcpServers`` JSON that MCP clients already use (Claude Desktop, Cursor,
Claude Code), VS Code's ``servers`` key with the same entries, or a TOML file of the same
shape (``[mcpServers.<name>]`` tables; chosen by the ``.toml`` extension). JSON files may
carry ``//`` and ``/* */`` comments and trailing commas, as VS Code's ``mcp.json`` does::

    {
      "mcpServers": {
        "comfy": {"command": "python", "args": ["server.py"], "env": {"KEY": "${KEY}"}},
        "search": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}}
      },
      "supervisor": {"defaults": {"timeout": 120}, "http": "127.0.0.1:8765"}
    }

A server entry has ``command``/``args``/``env``/``cwd``/``envFile`` (stdio; ``envFile``, as VS
Code has it, is a file of ``KEY=VALUE`` lines added to ``env``, which wins over it; relative:
to the config file's directory) or ``url``/``headers`` with ``type`` or ``transport``
(``sse``, ``streamable-http`` or its alias ``http``; without one a URL whose path ends in
``/sse`` is SSE, any other streamable HTTP), plus any `ServerSpec`
field: ``restart``, ``backoff``, ``breaker``, ``retry``, ``timeout``, ``connect_timeout``,
``max_concurrency``, ``max_queue``, ``namespace``, ``categories``, ``retry_safe_tools``,
``trust_annotations``, ``enabled``, ``hang_threshold``, ``garbage_threshold``,
``max_message_bytes``, ``tools_ttl``, ``health_check_interval``, ``health_check_timeout``,
``shutdown_timeout``. The server's name is its key. A relative ``cwd`` is taken relative to
the config file's directory, and so is a relative ``command`` path (``./run.sh``, not a bare
name, which is looked up on PATH) of a server with no ``cwd``. That directory is the one the
path given names, as the kernel resolves it, with the file's own symlink not followed (as
VS Code and docker-compose take it): a config that is a symlink, as Kubernetes mounts a
ConfigMap (``config.json -> ..data/config.json``, ``..data`` swapped to a new timestamped
directory on each update, the old one deleted), has its paths where the symlink is, which
stay.

Variables. ``${VAR}``, ``${env:VAR}`` (VS Code's spelling) and ``${VAR:-default}`` (the
default when VAR is unset or empty) are expanded from ``environ`` in ``command``, ``args``,
``cwd``, ``env`` values, ``url``, ``headers`` values and ``supervisor.auth_token``; ``$${``
is a literal ``${``. A variable that is not set is an error naming it and the key, except in
a server with ``enabled: false``, where the reference is kept as written. VS Code's own
variables (``${workspaceFolder}``, ``${userHome}``, ``${config:...}``, ``${input:...}``) are
filled in by VS Code from the editor; here an unset one is an error saying so. What a
server's references took from the environment is noted in its spec (`ServerSpec.from_environ`,
variable name -> value; not a key of the file), for the runtime redactor
(`supervisor._redact`) to hide those whose name says secret wherever they went.

Precedence, lowest first -- the more specific setting wins, and at the same specificity the
environment overrides the file:

1. built-in defaults (`ServerSpec`, `ServerDefaults`, `SupervisorSettings`);
2. the file's ``supervisor`` section (``supervisor.defaults`` for every server);
3. the environment's settings for every server: ``COMFYUI_MCP_MAX_RETRIES``,
   ``COMFYUI_MCP_RETRY_INITIAL_DELAY``, ``COMFYUI_MCP_RETRY_MAX_DELAY`` (``retry``),
   ``COMFYUI_MCP_CIRCUIT_BREAKER_ENABLED``, ``_THRESHOLD`` (``failure_threshold``),
   ``_TIMEOUT`` (``open_seconds``) (``breaker``), ``COMFYUI_MCP_CACHE_TOOLS``,
   ``COMFYUI_MCP_CACHE_TTL`` (``supervisor.cache_tools``/``cache_ttl``: the default
   ``tools_ttl``; see `UNCACHED_TOOLS_TTL`);
4. a server's own keys in the file, merged key by key (a server that sets ``retry:
   {"max_delay": 5}`` keeps the environment's ``max_retries``);
5. the environment's settings for one named server: ``COMFYUI_MCP_INTERNAL_URL`` and
   ``_TIMEOUT`` (server ``comfyui-internal``), ``COMFYUI_MCP_MODELSCOPE_URL`` and
   ``_TIMEOUT`` (``modelscope``), ``COMFYUI_LOCAL_MCP_SERVER`` (``comfyui-local``: the
   script run by ``sys.executable``). Each adds its server, or overrides ``url``/``timeout``
   (``command``/``args``) of a file server of that name. A ``_TIMEOUT`` without its server
   is ignored (with a warning).

Why the environment does not override a server's own keys: the seed's ``.env`` sets the
global knobs to their defaults as boilerplate, and a server tuned in the file (say
``retry: {"max_retries": 0}`` for a server whose tools must not run twice) must not be
silently undone by it. Empty environment values count as unset.

Guarantees:

- A bad config is refused with a `ConfigError` before anything starts, whose message names
  the file, the key path (``mcpServers.comfy.timeout``, ``servers["my.server"].args[1]``,
  or the environment variable) and the reason: syntax errors (with line and column),
  unknown keys (with a did-you-mean), wrong types, out-of-range numbers, a server with both
  or neither of ``command`` and ``url``, a transport that does not fit, an empty or duplicate
  server name (also across ``mcpServers`` and ``servers``, and duplicate JSON keys), unknown
  tool categories and toolset categories (checked by the registry's own
  `check_categories`/`check_toolsets`), missing variables and bad environment values; and
  a config or ``envFile`` that cannot be read as text (missing, unreadable, a directory, not
  UTF-8, a path holding a NUL character; the reason names an ``envFile``'s path).
- Loading reads the one file, the ``envFile`` of each enabled server, and ``environ``, and
  nothing else; ``os.environ`` is never modified.
- Loading does not block for ever: the config and an ``envFile`` may be a FIFO (1Password
  mounts ``.env`` files as FIFOs; ``--config <(op inject ...)`` is a pipe), read to its
  writer's close within `PIPE_TIMEOUT` or refused; a device or socket is refused unread
  (a terminal would wait for someone to type, ``/dev/zero`` never end), ``/dev/null`` is the
  empty file.
- `redacted` never shows an ``env`` or ``headers`` value, ``auth_token``, URL credentials,
  query values or fragments (in ``url`` and in ``args``), the value of a secret-looking
  argument (``--token x``, ``--api-key=x``) or of a secret-looking header line in ``args``
  (``--header "Authorization: Bearer x"``), nor these in a command line put in ``command``;
  given the `Substitutions` `load_config` saw, nor anything a ``${VAR}`` reference took from
  the environment, wherever it went (a value under 4 characters: where it was put).
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
import select
import shlex
import stat
import sys
import time
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, Union
from urllib.parse import urlsplit, urlunsplit

import msgspec

from actors._registry import check_categories, check_toolsets
from protocol import BackoffPolicy, BreakerPolicy, RetryPolicy, ServerSpec
from protocol._settings import Config, ServerDefaults, SupervisorSettings

__all__ = [
    "DEMO_SERVER",
    "ENV_LOCAL_SERVER",
    "ENV_REMOTE_SERVERS",
    "PIPE_TIMEOUT",
    "REDACTED",
    "ConfigError",
    "Substitutions",
    "check_spec",
    "load_config",
    "redact_command",
    "redacted",
]

log = logging.getLogger("supervisor.config")

REDACTED: Final = "***"
DEMO_SERVER: Final = "demo"
NO_FILE: Final = "(no config file)"

ENV_REMOTE_SERVERS: Final[tuple[tuple[str, str, str], ...]] = (
    ("comfyui-internal", "COMFYUI_MCP_INTERNAL_URL", "COMFYUI_MCP_INTERNAL_TIMEOUT"),
    ("modelscope", "COMFYUI_MCP_MODELSCOPE_URL", "COMFYUI_MCP_MODELSCOPE_TIMEOUT"),
)
"""(server name, URL variable, timeout variable) for each remote server the environment adds."""

ENV_LOCAL_SERVER: Final = ("comfyui-local", "COMFYUI_LOCAL_MCP_SERVER")
"""(server name, variable): the stdio server running the variable's script with Python."""

_TOP_LEVEL_KEYS: Final = ("mcpServers", "servers", "supervisor", "inputs", "$schema")
_SECTIONS: Final = ("mcpServers", "servers")
_TRANSPORTS: Final = ("stdio", "sse", "streamable-http", "http")
_STDIO_ONLY: Final = ("args", "env", "cwd")
_REMOTE_ONLY: Final = ("headers",)
_ENTRY_KEYS: Final = tuple(
    sorted(({f.name for f in msgspec.structs.fields(ServerSpec)} - {"name", "from_environ"}) | {"type", "envFile"})
)
_DEFAULTS_KEYS: Final = tuple(f.name for f in msgspec.structs.fields(ServerDefaults))
_HINTS: Final[Mapping[tuple[type, str], str]] = {
    (ServerDefaults, "tools_ttl"): "the default tools_ttl is supervisor.cache_ttl (and cache_tools)",
    **{
        (ServerDefaults, key): "it has no default: set it in each server's entry"
        for key in set(_ENTRY_KEYS) - set(_DEFAULTS_KEYS) - {"tools_ttl"}
    },
}


class ConfigError(Exception):
    """A config that is refused. ``str(error)`` is ``"<file>: <key path>: <reason>"``.

    ``source`` is the file (None: no file was given), ``key`` the key path or environment
    variable, ``reason`` what is wrong.
    """

    def __init__(self, source: str | None, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = NO_FILE if source is None else source if source.strip() and source.isprintable() else repr(source)
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.source, self.key, self.reason))


class _Problem(Exception):
    """A `ConfigError` before the file's name is attached."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason


# -- key paths --------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_$-]+")


def _key_path(parts: list[str | int]) -> str:
    """``["mcpServers", "a.b", "args", 1]`` -> ``mcpServers["a.b"].args[1]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out


def _problem(parts: list[str | int], reason: str) -> _Problem:
    return _Problem(_key_path(parts), reason)


def _env_problem(var: str, reason: str) -> _Problem:
    return _Problem(f"environment variable {var}", reason)


def _normalised(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def _unknown_key(key: str, allowed: list[str] | tuple[str, ...]) -> str:
    """The reason for an unknown ``key``: a did-you-mean, or the allowed keys."""
    same = [a for a in allowed if _normalised(a) == _normalised(key)]
    close = same or difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; allowed keys: {', '.join(sorted(allowed))}"


def _check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], parts: list[str | int]) -> None:
    for key in data:
        if key not in allowed:
            raise _problem([*parts, key], _unknown_key(key, allowed))


# -- reading the file ---------------------------------------------------------------------


class _JSONObject(dict):  # type: ignore[type-arg]
    """A decoded JSON object that remembers keys it saw more than once."""

    duplicates: list[str]


def _json_object(pairs: list[tuple[str, Any]]) -> _JSONObject:
    obj = _JSONObject()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def _plain(value: Any, parts: list[str | int]) -> Any:
    """``value`` with plain dicts; a key that appeared twice in one object, or nesting past
    `_MAX_DEPTH`, is a problem."""
    if len(parts) > _MAX_DEPTH:
        raise _problem(parts[:3], f"nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        for key in getattr(value, "duplicates", ()):
            raise _problem([*parts, key], "duplicate key: it appears more than once in the same object")
        return {k: _plain(v, [*parts, k]) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, [*parts, i]) for i, v in enumerate(value)]
    return value


def _strip_jsonc(text: str) -> str:
    """``text`` with ``//`` and ``/* */`` comments and trailing commas blanked out.

    Every removed character becomes a space (newlines stay), so line and column numbers
    in JSON errors still point into the original text. An unterminated block comment is left
    alone, for the JSON parser to report.
    """
    out = list(text)
    n = len(text)
    i = 0
    last = -1  # the last significant character outside comments
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            last = min(j, n - 1)
            i = j + 1
            continue
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j == -1 else j
            out[i:j] = " " * (j - i)
            i = j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j == -1:
                break
            j += 2
            out[i:j] = [ch if ch == "\n" else " " for ch in text[i:j]]
            i = j
            continue
        if c in "}]" and last >= 0 and text[last] == ",":
            out[last] = " "
        if not c.isspace():
            last = i
        i += 1
    return "".join(out)


_MAX_DEPTH = 64
"""How deeply a config may nest (no real one comes near; past a few hundred the parsers recurse out)."""


def _unnameable(path: str) -> str | None:
    """Why no file can be named ``path`` (None: one may): `open` would raise a `ValueError`."""
    if "\0" in path:
        return "the path holds a NUL character, which no file name can"
    try:
        os.fsencode(path)
    except UnicodeEncodeError as exc:  # a lone surrogate, as "\ud800" in JSON
        bad = exc.object[exc.start : exc.end].encode("unicode_escape").decode()
        return f"the path holds {bad}, which no file name can"
    return None


PIPE_TIMEOUT: Final = 30.0
"""How long (seconds) loading waits for a FIFO given as the config or an ``envFile`` to be
written to its end. 1Password mounts ``.env`` files as FIFOs that its app writes once a read
is authorized (a prompt a person answers); ``--config <(op inject -i tpl.json)`` is a pipe."""

_PIPE_MAX_BYTES: Final = 1 << 20
_NOT_FILES: Final = (
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
)


class _NotAFile(Exception):
    """A path that names something to read no text from: ``str(error)`` says what it is."""


def _not_a_file(mode: int) -> _NotAFile | None:
    for test, kind in _NOT_FILES:
        if test(mode):
            return _NotAFile(f"is {kind}, not a file: a read of it may block or never end")
    return None


def _read_text(path: str) -> str:
    """The UTF-8 text (a BOM dropped) of the file at ``path``: a regular file, a FIFO read to
    its end within `PIPE_TIMEOUT` (not for ever: the caller, the daemon's reload, would hang
    with it), or ``/dev/null`` (empty). Raises `OSError` (a directory: EISDIR),
    `UnicodeDecodeError`, or `_NotAFile` for a device or socket, which is not opened at all
    (a terminal would block a read; ``/dev/zero`` never ends one)."""
    status = os.stat(path)
    if os.path.samestat(status, os.stat(os.devnull)):
        return ""
    if problem := _not_a_file(status.st_mode):
        raise problem
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO's open waits for no writer
    try:
        mode = os.fstat(fd).st_mode  # what was opened, should the path have changed since
        if stat.S_ISFIFO(mode):
            data = _drain_pipe(fd)
        elif problem := _not_a_file(mode):
            raise problem
        else:
            with open(fd, "rb", closefd=False) as file:
                data = file.read()
    finally:
        os.close(fd)
    return data.decode("utf-8-sig")


def _drain_pipe(fd: int) -> bytes:
    """What the FIFO open (non-blocking) at ``fd`` gives up to its writer's close, waiting
    at most `PIPE_TIMEOUT` for it."""
    deadline = time.monotonic() + PIPE_TIMEOUT
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = bytearray()
    while (left := deadline - time.monotonic()) > 0:
        if not poller.poll(math.ceil(left * 1000)):
            continue
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if chunk:
            data += chunk
            if len(data) > _PIPE_MAX_BYTES:
                raise _NotAFile(f"is a FIFO (a named pipe) that gave more than {_PIPE_MAX_BYTES} bytes")
        elif data:
            return bytes(data)  # the writer closed its end
        else:  # no writer yet (some systems' poll says readable then), or one that wrote nothing
            time.sleep(min(0.05, max(left, 0)))
    said = "nothing" if not data else "no end to what it gave"
    raise _NotAFile(
        f"is a FIFO (a named pipe) that gave {said} within {PIPE_TIMEOUT:g} s: is what writes it "
        "(1Password's app, for its mounted .env files) locked, or waiting for the read to be authorized?"
    )


def _read(path: str) -> Any:
    if not path.strip():
        raise _Problem("", "the config path is empty (an unset variable?)")
    unnameable = _unnameable(path)
    if unnameable:
        raise _Problem("", unnameable)
    try:
        text = _read_text(path)
    except _NotAFile as exc:
        raise _Problem("", str(exc)) from None
    except FileNotFoundError:
        raise _Problem("", "no such file") from None
    except UnicodeDecodeError as exc:
        raise _Problem("", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise _Problem("", f"cannot read the file: {exc.strerror or exc}") from None
    too_deep = _Problem("", f"nested more than {_MAX_DEPTH} levels deep")
    # Python reads no integer of more digits than this (a guard against slow conversions):
    # json and tomllib raise a bare ValueError for one.
    too_long = _Problem("", f"a number of more than {sys.get_int_max_str_digits()} digits, which no setting takes")
    if path.lower().endswith(".toml"):
        try:
            return _plain(tomllib.loads(text), [])
        except tomllib.TOMLDecodeError as exc:
            raise _Problem("", f"invalid TOML: {exc}") from None
        except RecursionError:
            raise too_deep from None
        except ValueError:
            raise too_long from None
    try:
        document = json.loads(_strip_jsonc(text), object_pairs_hook=_json_object)
    except json.JSONDecodeError as exc:
        raise _Problem(f"line {exc.lineno}, column {exc.colno}", f"invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise too_deep from None
    except ValueError:
        raise too_long from None
    return _plain(document, [])


# -- typed decoding with key paths ----------------------------------------------------------

_MSGSPEC_PATH = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[\.\.\.\]")
_TYPE_WORDS: Final = {
    "float": "a number",
    "int": "an integer",
    "str": "a string",
    "bool": "true or false",
    "object": "an object",
    "array": "a list",
    "null": "null",
}


def _bare(tp: Any) -> Any:
    """``tp`` without ``| None``."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return tp


def _field_types(cls: type) -> dict[str, Any]:
    return {f.name: f.type for f in msgspec.structs.fields(cls)}


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _locate(data: Any, tp: Any, path: str) -> tuple[list[str | int], Any]:
    """Follow a msgspec error path (``$.retry.max_delay``, ``$.env[...]``) through ``data``.

    Returns the real keys (msgspec writes ``[...]`` for a dict key; the first key whose value
    does not convert is the culprit) and the type expected there.
    """
    keys: list[str | int] = []
    for match in _MSGSPEC_PATH.finditer(path):
        field, index = match.group(1), match.group(2)
        tp = _bare(tp)
        if field is not None:
            keys.append(field)
            tp = _field_types(tp).get(field, Any) if _is_struct(tp) else Any
            data = data.get(field) if isinstance(data, dict) else None
        elif index is not None:
            keys.append(int(index))
            args = typing.get_args(tp)
            tp = args[0] if args else Any
            data = data[int(index)] if isinstance(data, list) and int(index) < len(data) else None
        else:
            args = typing.get_args(tp)
            tp = args[1] if len(args) == 2 else Any
            if not isinstance(data, dict):
                break
            for key, value in data.items():
                try:
                    msgspec.convert(value, tp)
                except msgspec.ValidationError:
                    keys.append(key)
                    data = value
                    break
            else:
                break
    return keys, tp


def _words(types_text: str) -> str:
    return " or ".join(_TYPE_WORDS.get(t.strip(), t.strip()) for t in types_text.split("|"))


def _convert(data: Any, cls: type, parts: list[str | int], *, top_keys: tuple[str, ...] | None = None) -> Any:
    """``msgspec.convert(data, cls)``, or a `_Problem` naming the key path and the reason."""
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as exc:
        message = str(exc)
        reason, _, path = message.partition(" - at `")
        keys, tp = _locate(data, cls, path.rstrip("`"))
        unknown = re.fullmatch(r"Object contains unknown field `(.*)`", reason, re.S)
        if unknown:
            key = unknown.group(1)
            owner = _bare(tp)
            allowed = top_keys if not keys and top_keys else tuple(_field_types(owner)) if _is_struct(owner) else ()
            hint = _HINTS.get((owner, key)) if isinstance(owner, type) else None
            why = f"unknown key in defaults; {hint}" if hint else _unknown_key(key, allowed)
            raise _problem([*parts, *keys, key], why) from None
        enum = re.fullmatch(r"Invalid enum value (.*)", reason, re.S)
        if enum:
            choices = [str(v) for v in typing.get_args(_bare(tp))] if typing.get_origin(_bare(tp)) is Literal else []
            raise _problem([*parts, *keys], _not_one_of(enum.group(1), choices)) from None
        expected = re.fullmatch(r"Expected `(.*)`, got `(.*)`", reason, re.S)
        if expected:
            reason = f"expected {_words(expected.group(1))}, got {_words(expected.group(2))}"
        raise _problem([*parts, *keys], reason) from None


def _not_one_of(got: str, choices: list[str]) -> str:
    if not choices:
        return f"invalid value {got}"
    close = difflib.get_close_matches(got.strip("'\""), choices, n=1, cutoff=0.5)
    allowed = ", ".join(repr(c) for c in choices)
    return f"must be one of {allowed}, got {got}" + (f"; did you mean {close[0]!r}?" if close else "")


# -- ranges ---------------------------------------------------------------------------------

_Rule = tuple[Callable[[Any], bool], str]


def _out_of_range(value: float, rule: _Rule) -> str | None:
    ok, description = rule
    if not ok(value):
        return f"{description}, got {value!r}"
    if value == math.inf:
        return f"must be finite, got {value!r}"
    return None

_POSITIVE: Final[_Rule] = (lambda v: v > 0, "must be > 0")
_NON_NEGATIVE: Final[_Rule] = (lambda v: v >= 0, "must be >= 0")
_AT_LEAST_ONE: Final[_Rule] = (lambda v: v >= 1, "must be >= 1")
_FRACTION: Final[_Rule] = (lambda v: 0 < v <= 1, "must be > 0 and <= 1")
# Not 0: the delay, min(max, min * 2**n), would stay 0, and a server that crashes at once
# would restart as fast as it can for ever (servers have no restart intensity).
_BACKOFF_BOUND: Final[_Rule] = (lambda v: v > 0, "must be > 0 (with 0 a crashing server restarts as fast as it can, for ever)")
_CACHE_TTL: Final[_Rule] = (lambda v: v > 0, "must be > 0 (to turn tool caching off, set COMFYUI_MCP_CACHE_TOOLS=false)")
_SERVER_LIMITS: Final[dict[str, _Rule]] = {
    "timeout": _POSITIVE,
    "connect_timeout": _POSITIVE,
    "shutdown_timeout": _NON_NEGATIVE,
    "max_concurrency": _AT_LEAST_ONE,
    "max_queue": _NON_NEGATIVE,
    "hang_threshold": _AT_LEAST_ONE,
    "garbage_threshold": _AT_LEAST_ONE,
    "max_message_bytes": _AT_LEAST_ONE,
    "health_check_interval": _POSITIVE,
    "health_check_timeout": _POSITIVE,
}
_LIMITS: Final[Mapping[type, Mapping[str, _Rule]]] = {
    ServerSpec: {**_SERVER_LIMITS, "tools_ttl": _POSITIVE},
    ServerDefaults: _SERVER_LIMITS,
    BackoffPolicy: {
        "min": _BACKOFF_BOUND,
        "max": _BACKOFF_BOUND,
        "jitter": _NON_NEGATIVE,
        "reset_after": _NON_NEGATIVE,
        "max_consecutive": _AT_LEAST_ONE,
    },
    BreakerPolicy: {
        "failure_threshold": _AT_LEAST_ONE,
        "window": _AT_LEAST_ONE,
        "min_calls": _NON_NEGATIVE,
        "failure_rate": _FRACTION,
        "slow_call_seconds": _POSITIVE,
        "slow_call_rate": _FRACTION,
        "open_seconds": _POSITIVE,
        "max_open_seconds": _POSITIVE,
        "half_open_permits": _AT_LEAST_ONE,
    },
    RetryPolicy: {
        "max_retries": _NON_NEGATIVE,
        "initial_delay": _NON_NEGATIVE,
        "max_delay": _NON_NEGATIVE,
        "exponential_base": _AT_LEAST_ONE,
        "budget_ratio": _NON_NEGATIVE,
        "budget_window": _POSITIVE,
    },
    SupervisorSettings: {"max_body_bytes": _AT_LEAST_ONE, "cache_ttl": _POSITIVE, "drain_timeout": _NON_NEGATIVE,
                         "stall_timeout": _POSITIVE, "max_sessions": _AT_LEAST_ONE, "session_idle_timeout": _POSITIVE},
}


def check_spec(spec: ServerSpec) -> None:
    """Raise ``ValueError`` naming the key and the reason for a number of a spec made in
    code (not read from a file) that is out of its range, or a header no HTTP request can
    carry (never quoting its value: it may be a secret), as a config file's would be."""
    try:
        for header, value in spec.headers.items():
            if problem := _header_problem(header, value):
                raise _problem(["headers", header], problem)
        _check_limits(spec, [])
    except _Problem as problem:
        raise ValueError(f"server {spec.name!r}: {problem.key}: {problem.reason}") from None


def _check_limits(obj: msgspec.Struct, parts: list[str | int]) -> None:
    """Every number in ``obj`` (and its nested policies) within its range and finite (NaN
    and infinity never are: an infinite timeout is a wait with no deadline)."""
    for field, rule in _LIMITS.get(type(obj), {}).items():
        value = getattr(obj, field)
        if value is not None and (why := _out_of_range(value, rule)):
            raise _problem([*parts, field], why)
    for field in msgspec.structs.fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, msgspec.Struct):
            _check_limits(value, [*parts, field.name])


# -- variables ----------------------------------------------------------------------------

class Substitutions:
    """What ``${VAR}`` references took from the environment while a config was loaded
    (`load_config`'s ``substitutions``), for `redacted` to hide: ``values``, each value
    taken, ``shown``, each string a value went into mapped to that string as written
    with the value as ``***``, and ``by_name``, variable name -> the value taken."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.shown: dict[str, str] = {}
        self.by_name: dict[str, str] = {}

    def add(self, other: Substitutions) -> None:
        """Also know what ``other`` saw (where both saw a string, the first told wins)."""
        self.values |= other.values
        for expanded, shown in other.shown.items():
            self.shown.setdefault(expanded, shown)
        self.by_name.update(other.by_name)

    def hide(self, text: str) -> str:
        """``text`` with what came from the environment as ``***``: a string a value went
        into, as a whole, and any value (or string) of `_HIDDEN_ANYWHERE` characters or
        more wherever it appears in ``text``. Shorter ones (``1``, ``on``) are hidden only
        where they were put: masked everywhere, they would turn ``127.0.0.1`` into
        ``***27.0.0.***``."""
        if text in self.shown:
            return self.shown[text]
        for expanded in sorted(self.shown, key=len, reverse=True):
            if len(expanded) >= _HIDDEN_ANYWHERE and expanded in text:
                text = text.replace(expanded, self.shown[expanded])
        for value in sorted(self.values, key=len, reverse=True):
            if len(value) >= _HIDDEN_ANYWHERE:
                text = text.replace(value, REDACTED)
        return text


_HIDDEN_ANYWHERE: Final = 4
"""A value ``${VAR}`` took from the environment at least this long is redacted wherever it
appears in `check`'s output; a shorter one only in the strings it went into."""

_REFERENCE = re.compile(r"\$\$\{|\$\{([^{}]*)\}|\$\{")
_VSCODE_VARIABLES: Final = frozenset({
    "workspaceFolder", "workspaceFolderBasename", "workspaceRoot", "file", "fileWorkspaceFolder", "relativeFile",
    "relativeFileDirname", "fileBasename", "fileBasenameNoExtension", "fileExtname", "fileDirname",
    "fileDirnameBasename", "cwd", "lineNumber", "selectedText", "execPath", "pathSeparator", "userHome",
    "defaultBuildTask",
})
"""VS Code's predefined variables (``${workspaceFolder}``): VS Code fills them in from the
editor's state, which the supervisor does not have. Taken from the environment when set
there, as any ``${VAR}``; unset, the error says what they are."""
_REFERENCE_BODY = re.compile(r"(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.S)


def _expand(
    text: str, parts: list[str | int], environ: Mapping[str, str], *, strict: bool, seen: Substitutions | None
) -> str:
    """``text`` with ``${VAR}``, ``${env:VAR}`` and ``${VAR:-default}`` replaced; what came
    from ``environ`` is told to ``seen`` (when given)."""
    shown: list[str] = []  # ``text`` expanded, with what came from environ as REDACTED
    start = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal start
        value, from_environ = resolve(match)
        shown.append(text[start : match.start()] + (REDACTED if from_environ is not None else value))
        start = match.end()
        if from_environ is not None and seen is not None:
            seen.values.add(value)
            seen.by_name[from_environ] = value
        return value

    def resolve(match: re.Match[str]) -> tuple[str, str | None]:
        """The value, and the variable's name when it came from ``environ``."""
        whole = match.group(0)
        if whole == "$${":
            return "${", None
        body = match.group(1)
        if body is None:
            raise _problem(parts, "unterminated or nested '${' (write '$${' for a literal '${')")
        if body.startswith("input:"):
            raise _problem(parts, f"VS Code input variables like {whole!r} are not supported; use ${{VAR}}")
        if body.startswith(("config:", "command:")) or body.partition(":")[0] in _VSCODE_VARIABLES and ":" in body:
            raise _problem(parts, f"{whole!r} is a VS Code variable, which VS Code fills in and the supervisor "
                                  "cannot know; write the value itself, or use ${VAR}")
        reference = _REFERENCE_BODY.fullmatch(body)
        if reference is None:
            raise _problem(parts, f"malformed variable reference {whole!r}")
        name, default = reference.group(1), reference.group(2)
        value = environ.get(name)
        if value:
            return value, name
        if default is not None:
            return default, None
        if value is not None:
            return value, None
        if not strict:
            return whole, None
        if name in _VSCODE_VARIABLES and not body.startswith("env:"):
            raise _problem(parts, f"{whole!r} is a VS Code variable, which VS Code fills in and the supervisor cannot "
                                  f"know; write the path itself (cwd and envFile may be relative to the config "
                                  f"file's directory), or set {name} in the environment")
        raise _problem(parts, f"environment variable {name!r} is not set (write ${{{name}:-default}} for a default)")

    expanded = _REFERENCE.sub(replace, text)
    if seen is not None and REDACTED in "".join(shown) and expanded not in seen.shown:
        seen.shown[expanded] = "".join(shown) + text[start:]
    return expanded


def _expand_entry(
    raw: dict[str, Any], parts: list[str | int], environ: Mapping[str, str], strict: bool, seen: Substitutions | None
) -> None:
    for key in ("command", "cwd", "url", "envFile"):
        if isinstance(raw.get(key), str):
            raw[key] = _expand(raw[key], [*parts, key], environ, strict=strict, seen=seen)
    if isinstance(raw.get("args"), list):
        raw["args"] = [
            _expand(a, [*parts, "args", i], environ, strict=strict, seen=seen) if isinstance(a, str) else a
            for i, a in enumerate(raw["args"])
        ]
    for key in ("env", "headers"):
        if isinstance(raw.get(key), dict):
            raw[key] = {
                k: _expand(v, [*parts, key, k], environ, strict=strict, seen=seen) if isinstance(v, str) else v
                for k, v in raw[key].items()
            }


def _with_env_file(raw: dict[str, Any], parts: list[str | int], base_dir: Path | None, *, read: bool) -> Any:
    """The entry's ``env`` over what its ``envFile`` (popped) sets; unread when not ``read``
    (a disabled server's file may be meant for another machine)."""
    path = raw.pop("envFile")
    env = raw.get("env", {})
    if not isinstance(path, str):
        raise _problem(parts, f"expected a path, got {_words(type(path).__name__)}")
    if raw.get("url") is not None:
        raise _problem(parts, "only for stdio servers (with 'command'); this server has a 'url'")
    if not read or not isinstance(env, dict):  # a wrong env is told by the decoding
        return env
    file = Path(os.path.expanduser(path))
    if base_dir is not None and not file.is_absolute():
        file = base_dir / file
    unnameable = _unnameable(str(file))
    if unnameable:
        raise _problem(parts, f"{str(file)!r}: {unnameable}")
    try:
        text = _read_text(str(file))
    except _NotAFile as exc:
        raise _problem(parts, f"{str(file)!r} {exc}") from None
    except FileNotFoundError:
        raise _problem(parts, f"no such file: {str(file)!r}") from None
    except UnicodeDecodeError as exc:
        raise _problem(parts, f"{str(file)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise _problem(parts, f"cannot read {str(file)!r}: {exc.strerror or exc}") from None
    return {**_dotenv(text, parts, str(file)), **env}


_DOTENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _dotenv(text: str, parts: list[str | int], file: str) -> dict[str, str]:
    """``KEY=VALUE`` lines, as VS Code's ``envFile`` takes them: blank lines and ``#``
    comments skipped, an ``export`` prefix dropped, a value in matching quotes taken as it
    is between them, an unquoted one up to a `` #`` comment; no ``${VAR}`` expansion."""
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep or not _DOTENV_KEY.fullmatch(key.strip()):  # the line is not quoted: it may hold a secret
            raise _problem(parts, f"{file!r} line {number}: expected KEY=VALUE")
        value = value.strip()
        if "\0" in value:  # told here, where the file's line is known (env.KEY is not in the config)
            raise _problem(parts, f"{file!r} line {number}: holds a NUL character, which no process can be given")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        env[key.strip()] = value
    return env


# -- the environment ------------------------------------------------------------------------

_TRUE: Final = ("1", "true", "yes", "on")
_FALSE: Final = ("0", "false", "no", "off")


def _env(environ: Mapping[str, str], var: str) -> str | None:
    value = environ.get(var)
    return value.strip() if value is not None and value.strip() else None


def _env_bool(environ: Mapping[str, str], var: str) -> bool | None:
    value = _env(environ, var)
    if value is None:
        return None
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise _env_problem(var, f"expected true or false, got {value[:40]!r}")


def _env_number(environ: Mapping[str, str], var: str, kind: type, rule: _Rule) -> Any:
    value = _env(environ, var)
    if value is None:
        return None
    word = "an integer" if kind is int else "a number"
    try:
        number = kind(value)
    except ValueError:
        if kind is int and value.strip().lstrip("+-").isdigit():  # over Python's 4300-digit limit
            raise _env_problem(var, f"an integer of {len(value.strip())} digits is out of range") from None
        raise _env_problem(var, f"expected {word}, got {value[:40]!r}") from None
    why = _out_of_range(number, rule)
    if why:
        raise _env_problem(var, why.rsplit(", got ", 1)[0] + f", got {value[:40]!r}")
    return number


def _env_url(environ: Mapping[str, str], var: str) -> str | None:
    value = _env(environ, var)
    if value is not None:
        problem = _url_problem(value)
        if problem:
            raise _env_problem(var, problem)
    return value


def _apply_env_settings(settings: SupervisorSettings, environ: Mapping[str, str]) -> SupervisorSettings:
    """``settings`` with the environment's settings for every server applied."""
    retry: dict[str, Any] = {
        "max_retries": _env_number(environ, "COMFYUI_MCP_MAX_RETRIES", int, _NON_NEGATIVE),
        "initial_delay": _env_number(environ, "COMFYUI_MCP_RETRY_INITIAL_DELAY", float, _NON_NEGATIVE),
        "max_delay": _env_number(environ, "COMFYUI_MCP_RETRY_MAX_DELAY", float, _NON_NEGATIVE),
    }
    breaker: dict[str, Any] = {
        "enabled": _env_bool(environ, "COMFYUI_MCP_CIRCUIT_BREAKER_ENABLED"),
        "failure_threshold": _env_number(environ, "COMFYUI_MCP_CIRCUIT_BREAKER_THRESHOLD", int, _AT_LEAST_ONE),
        "open_seconds": _env_number(environ, "COMFYUI_MCP_CIRCUIT_BREAKER_TIMEOUT", float, _POSITIVE),
    }
    cache: dict[str, Any] = {
        "cache_tools": _env_bool(environ, "COMFYUI_MCP_CACHE_TOOLS"),
        "cache_ttl": _env_number(environ, "COMFYUI_MCP_CACHE_TTL", float, _CACHE_TTL),
    }
    retry = {k: v for k, v in retry.items() if v is not None}
    breaker = {k: v for k, v in breaker.items() if v is not None}
    cache = {k: v for k, v in cache.items() if v is not None}
    defaults = settings.defaults
    defaults = msgspec.structs.replace(
        defaults,
        retry=msgspec.structs.replace(defaults.retry, **retry),
        breaker=msgspec.structs.replace(defaults.breaker, **breaker),
    )
    return msgspec.structs.replace(settings, defaults=defaults, **cache)


def _env_servers(environ: Mapping[str, str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Server name -> (the variable that names it, the keys the environment sets)."""
    servers: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, url_var, timeout_var in ENV_REMOTE_SERVERS:
        url = _env_url(environ, url_var)
        timeout = _env_number(environ, timeout_var, float, _POSITIVE)
        keys: dict[str, Any] = {}
        if url is not None:
            keys["url"] = url
        if timeout is not None:
            keys["timeout"] = timeout
        if keys:
            servers[name] = (url_var if url is not None else timeout_var, keys)
    name, var = ENV_LOCAL_SERVER
    script = _env(environ, var)
    if script is not None:
        servers[name] = (var, {"command": sys.executable, "args": [script]})
    return servers


def _apply_env_server(raw: dict[str, Any], parts: list[str | int], var: str, keys: dict[str, Any]) -> None:
    """Override a file server's keys with the environment's (the more specific source)."""
    if "url" in keys and raw.get("command") is not None:
        raise _env_problem(var, f"sets a url for server {parts[-1]!r}, which {_key_path(parts)} runs as a command")
    if "command" in keys and raw.get("url") is not None:
        raise _env_problem(var, f"sets a script for server {parts[-1]!r}, which {_key_path(parts)} reaches by url")
    raw.update(keys)


# -- one server -----------------------------------------------------------------------------


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a server's URL (without repeating it: it may hold secrets)."""
    odd = next((i for i, c in enumerate(url) if c.isspace() or not c.isprintable()), None)
    if odd is not None:  # a paste with a blank or a line break: the HTTP client refuses it at every connect
        return f"the URL holds whitespace or a control character (at position {odd}); percent-encode it or remove it"
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # urllib's message can quote the netloc, credentials and all
        return "not a valid URL: " + ("its bracketed IPv6 host does not parse" if "IPv6" in str(exc) else "its host part does not parse")
    try:
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:  # urllib's message quotes the "port": a password when the host is missing
        why = "out of range 0-65535" if "out of range" in str(exc) else "not a number"
        return f"not a valid URL: the port is {why} (credentials go before an '@' and the host after it)"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "the URL has no host"
    return None


_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token


def _header_problem(name: str, value: str) -> str | None:
    """Why ``name: value`` cannot be sent as an HTTP header (without repeating the value: it
    may be a secret). Caught here, not at every connect: the HTTP layer refuses such a
    request, and the server would never connect."""
    if not _HEADER_NAME.fullmatch(name):
        return "not a valid HTTP header name (letters, digits and !#$%&'*+.^_`|~- only)"
    if any(c in value for c in "\r\n\0"):
        return "the value holds a line break or NUL (a token read from a file with Windows line endings?)"
    if value != value.strip(" \t"):
        return "the value starts or ends with whitespace (an empty ${VARIABLE} in it?)"
    if not value.isascii():
        return "the value is not ASCII"
    return None


def _infer_transport(url: str) -> str:
    """``sse`` for a URL whose path ends in ``/sse``, else ``streamable-http``."""
    return "sse" if urlsplit(url).path.rstrip("/").endswith("/sse") else "streamable-http"


def _transport(raw: dict[str, Any], parts: list[str | int]) -> tuple[str | None, str | None]:
    """Pop ``type``/``transport``; return (the normalised transport, the key that gave it)."""
    chosen: tuple[str | None, str | None] = (None, None)
    for key in ("type", "transport"):
        if key not in raw:
            continue
        value = raw.pop(key)
        if not isinstance(value, str):
            raise _problem([*parts, key], f"expected a string, got {type(value).__name__}")
        if value not in _TRANSPORTS:
            raise _problem([*parts, key], _not_one_of(repr(value), list(_TRANSPORTS)))
        value = "streamable-http" if value == "http" else value
        if chosen[0] is not None and chosen[0] != value:
            raise _problem([*parts, key], f"{value!r} contradicts {chosen[1]} {chosen[0]!r}")
        chosen = (value, key)
    return chosen


def _merge(defaults: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` overridden by ``raw``, nested objects key by key."""
    merged = dict(defaults)
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _build_server(
    name: str,
    entry: Any,
    parts: list[str | int],
    *,
    defaults: dict[str, Any],
    environ: Mapping[str, str],
    env_keys: tuple[str, dict[str, Any]] | None,
    base_dir: Path | None,
    seen: Substitutions | None = None,
) -> ServerSpec:
    if not isinstance(entry, dict):
        raise _problem(parts, f"expected an object with 'command' or 'url', got {type(entry).__name__}")
    if "name" in entry:
        raise _problem([*parts, "name"], "unknown key; a server's name is its key in the section")
    _check_keys(entry, _ENTRY_KEYS, parts)
    raw = dict(entry)
    if not isinstance(raw.get("enabled", True), bool):  # before the variables it decides about
        raise _problem([*parts, "enabled"], f"expected true or false, got {_words(type(raw['enabled']).__name__)}")
    strict = raw.get("enabled", True) is not False
    taken = Substitutions()  # this entry's, for its spec's ``from_environ``
    _expand_entry(raw, parts, environ, strict, taken)
    if seen is not None:
        seen.add(taken)
    if "envFile" in raw:
        raw["env"] = _with_env_file(raw, [*parts, "envFile"], base_dir, read=strict)
    if env_keys is not None:
        _apply_env_server(raw, parts, *env_keys)
    transport, transport_key = _transport(raw, parts)
    spec = _convert({**_merge(defaults, raw), "name": name}, ServerSpec, parts, top_keys=_ENTRY_KEYS)
    if spec.command is not None and spec.url is not None:
        raise _problem(parts, "has both 'command' (a stdio server) and 'url' (a remote server); keep one")
    if spec.command is None and spec.url is None:
        raise _problem(parts, "needs 'command' (a stdio server) or 'url' (a remote server)")
    if spec.command is not None:
        if not spec.command.strip():
            raise _problem([*parts, "command"], "must not be empty")
        if transport not in (None, "stdio"):
            raise _problem(
                [*parts, str(transport_key)], f"{transport!r} needs a 'url', but this server has a 'command'"
            )
        for key in _REMOTE_ONLY:
            if raw.get(key):
                raise _problem([*parts, key], "only for remote servers (with 'url'); this server has a 'command'")
        for where, text in [
            (["command"], spec.command), (["cwd"], spec.cwd or ""),
            *((["args", i], arg) for i, arg in enumerate(spec.args)),
            *((["env", k], k + "=" + v) for k, v in spec.env.items()),
        ]:
            if "\0" in text:  # no process can be started with it: every start would fail
                raise _problem([*parts, *where], "holds a NUL character, which no process can be given")
            try:
                os.fsencode(text)
            except UnicodeEncodeError as exc:  # a lone surrogate, as "\ud800" in JSON
                bad = exc.object[exc.start : exc.end].encode("unicode_escape").decode()
                raise _problem([*parts, *where], f"holds {bad}, which no process can be given") from None
        for name in spec.env:
            if not name or "=" in name:
                raise _problem([*parts, "env", name], "an environment variable's name must be non-empty, without '='")
        cwd = os.path.expanduser(spec.cwd) if spec.cwd is not None else None
        if cwd is not None and base_dir is not None and not os.path.isabs(cwd):
            cwd = str(base_dir / cwd)
        command = os.path.expanduser(spec.command)
        # A path (not a name looked up on PATH) is the config's, as cwd and envFile are: not
        # wherever the daemon happened to start. With a cwd, the server's own, from there.
        # (Not a whole command line put in ``command``, "npx -y @foo/server": `check` says
        # what it was meant to be.)
        if (cwd is None and base_dir is not None and os.sep in command and not os.path.isabs(command)
                and not any(c.isspace() for c in command)):
            command = os.path.normpath(os.path.join(base_dir, command))
        spec = msgspec.structs.replace(spec, transport="stdio", cwd=cwd, command=command)
    else:
        assert spec.url is not None
        # A disabled server keeps a missing variable as written: its URL is checked once it is set.
        kept = not strict and _REFERENCE.search(spec.url) is not None
        problem = None if kept else _url_problem(spec.url)
        if problem:
            raise _problem([*parts, "url"], problem)
        if transport == "stdio":
            raise _problem([*parts, str(transport_key)], "'stdio' needs a 'command', but this server has a 'url'")
        for key in _STDIO_ONLY:
            if raw.get(key):
                raise _problem([*parts, key], "only for stdio servers (with 'command'); this server has a 'url'")
        for header, value in spec.headers.items():
            problem = _header_problem(header, value)
            if problem:
                raise _problem([*parts, "headers", header], problem)
        spec = msgspec.structs.replace(spec, transport=transport or _infer_transport(spec.url))
    for tool, category in spec.categories.items():
        try:
            check_categories(name, {tool: category})
        except ValueError as exc:
            raise _problem([*parts, "categories", tool], str(exc)) from None
    _check_limits(spec, parts)
    return msgspec.structs.replace(spec, from_environ=taken.by_name) if taken.by_name else spec


# -- the supervisor section -------------------------------------------------------------------


def _bind_problem(bind: str) -> str | None:
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"expected 'host:port' like '127.0.0.1:8765' (IPv6: '[::1]:8765'), got {bind!r}"
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        return f"an IPv6 host goes in brackets, like '[::1]:8765', got {bind!r}"
    return None


def _settings(raw: Any, environ: Mapping[str, str], seen: Substitutions | None) -> SupervisorSettings:
    parts: list[str | int] = ["supervisor"]
    if not isinstance(raw, dict):
        raise _problem(parts, f"expected an object, got {type(raw).__name__}")
    raw = dict(raw)
    if isinstance(raw.get("auth_token"), str):
        raw["auth_token"] = _expand(raw["auth_token"], [*parts, "auth_token"], environ, strict=True, seen=seen)
    settings = _convert(raw, SupervisorSettings, parts)
    _check_limits(settings, parts)
    problem = _bind_problem(settings.http)
    if problem:
        raise _problem([*parts, "http"], problem)
    if settings.auth_token is not None and not settings.auth_token.strip():
        raise _problem([*parts, "auth_token"], "must not be empty (leave it out for no auth)")
    for toolset, categories in settings.toolsets.items():
        try:
            check_toolsets({toolset: categories})
        except ValueError as exc:
            raise _problem([*parts, "toolsets", toolset], str(exc)) from None
    return settings


# -- the whole config ---------------------------------------------------------------------------


def _demo_entry() -> dict[str, Any]:
    return {"command": sys.executable, "args": ["-m", "supervisor._demo_server"]}


def _load(source: str | None, environ: Mapping[str, str], seen: Substitutions | None) -> Config:
    document: Any = _read(source) if source is not None else {}
    if not isinstance(document, dict):
        raise _Problem("", f"the top level must be an object, got {type(document).__name__}")
    _check_keys(document, _TOP_LEVEL_KEYS, [])
    settings = _apply_env_settings(_settings(document.get("supervisor", {}), environ, seen), environ)
    defaults = {**msgspec.to_builtins(settings.defaults), "tools_ttl": settings.default_tools_ttl}
    env_servers = _env_servers(environ)
    # The config file itself is not resolved: a symlinked config's paths are where the link
    # is, not in its target's directory, which a ConfigMap update deletes (and every spec
    # there would then differ). Its directory is, as the kernel resolves it: a ``..`` after
    # a symlinked directory (``b/link/../c.json``) is the target's parent, the directory of
    # the very file read, where ``os.path.abspath`` would drop ``link/..`` as text.
    base_dir = (Path.cwd() / source).parent.resolve() if source is not None else None

    servers: list[ServerSpec] = []
    where: dict[str, str] = {}
    for section in _SECTIONS:
        entries = document.get(section, {})
        if not isinstance(entries, dict):
            raise _problem([section], f"expected an object of servers (name -> entry), got {type(entries).__name__}")
        for name, entry in entries.items():
            parts: list[str | int] = [section, name]
            if not name.strip():
                raise _problem(parts, "empty server name")
            if name in where:
                raise _problem(parts, f"duplicate server name: {name!r} is already defined in {where[name]}")
            where[name] = section
            servers.append(
                _build_server(
                    name,
                    entry,
                    parts,
                    defaults=defaults,
                    environ=environ,
                    env_keys=env_servers.get(name),
                    base_dir=base_dir,
                    seen=seen,
                )
            )
    for name, (var, keys) in env_servers.items():
        if name in where:
            continue
        if "url" not in keys and "command" not in keys:
            log.warning("%s is set, but there is no server %r to apply it to; ignored", var, name)
            continue
        servers.append(
            _build_server(
                name, {}, ["environment", name], defaults=defaults, environ=environ,
                env_keys=(var, keys), base_dir=None,
            )
        )
    if not servers and not any(section in document for section in _SECTIONS):
        if source is not None:
            raise _Problem("", "no servers: expected a 'mcpServers' section (or VS Code's 'servers')")
        servers.append(
            _build_server(
                DEMO_SERVER, _demo_entry(), ["default", DEMO_SERVER], defaults=defaults, environ=environ,
                env_keys=None, base_dir=None,
            )
        )
    return Config(servers=servers, settings=settings, source=source)


def load_config(
    path: str | os.PathLike[str] | None,
    *,
    environ: Mapping[str, str] = os.environ,
    substitutions: Substitutions | None = None,
) -> Config:
    """The config at ``path`` (JSON, or TOML by extension) with ``environ``'s overrides.

    With ``path`` None: the servers the environment names (``COMFYUI_MCP_INTERNAL_URL``,
    ``COMFYUI_MCP_MODELSCOPE_URL``, ``COMFYUI_LOCAL_MCP_SERVER``), or if it names none the
    bundled demo server, with the environment's settings applied either
    way. Raises `ConfigError` for anything wrong, a config or ``envFile`` that cannot be read
    as text included; nothing else.

    With ``substitutions``, what each ``${VAR}`` reference took from ``environ`` is told to
    it, for `redacted` to hide; the config returned is the same either way.
    """
    source = os.fspath(path) if path is not None else None
    try:
        return _load(source, environ, substitutions)
    except _Problem as problem:
        raise ConfigError(source, problem.key, problem.reason) from None


# -- redaction ----------------------------------------------------------------------------------

_SECRET_FLAG = re.compile(
    r"-{1,2}[\w.-]*(token|secret|passw(or)?d|api[-_]?key|auth|credential|private[-_]?key)[\w.-]*", re.I
)


def _redact_url(url: str) -> str:
    """``url`` without credentials, query values or fragment; ``***`` if it does not parse."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{name}={REDACTED}" if sep else REDACTED
        for name, sep, _ in (p.partition("=") for p in parts.query.split("&"))
    ) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, REDACTED if parts.fragment else ""))


_SECRET_HEADER = re.compile(
    r"([!#$%&'*+.^_`|~0-9A-Za-z-]*(token|secret|passw(or)?d|api[-_]?key|auth|credential|cookie)[!#$%&'*+.^_`|~0-9A-Za-z-]*)"
    r"\s*:.*",
    re.I | re.S,
)
_URL_ARG = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://.*", re.S)


def _redact_arg(arg: str) -> str:
    """One argument as `check` may show it: a URL redacted as ``url`` is, a header line
    whose name looks secret (``Authorization: Bearer x``, as ``mcp-remote --header``
    takes it) without its value."""
    if _URL_ARG.fullmatch(arg):
        return _redact_url(arg)
    header = _SECRET_HEADER.fullmatch(arg)
    return f"{header.group(1)}: {REDACTED}" if header else arg


def _redact_args(args: list[str]) -> list[str]:
    """``args`` with the values of secret-looking flags (``--token x``, ``--api-key=x``)
    hidden, and URLs and secret-looking header lines redacted (`_redact_arg`), alone or as
    a flag's ``=`` value."""
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        flag, sep, value = arg.partition("=")
        if _SECRET_FLAG.fullmatch(flag):
            if sep:
                out.append(f"{flag}={REDACTED}")
                continue
            hide_next = True
        elif sep and flag.startswith("-") and _redact_arg(value) != value:
            out.append(f"{flag}={_redact_arg(value)}")
            continue
        out.append(_redact_arg(arg))
    return out


def _hidden(data: Any, substitutions: Substitutions) -> Any:
    """``data`` with every string value (not the keys: names the file gave) hidden as
    `Substitutions.hide` does."""
    if isinstance(data, str):
        return substitutions.hide(data)
    if isinstance(data, dict):
        return {key: _hidden(value, substitutions) for key, value in data.items()}
    if isinstance(data, list):
        return [_hidden(value, substitutions) for value in data]
    return data


def redact_command(command: str) -> str:
    """``command`` with the arguments of a command line put in it redacted as ``args`` are
    (unchanged when there is nothing to hide)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    shown = _redact_args(words[1:])
    return command if shown == words[1:] else shlex.join([*words[:1], *shown])


def redacted(config: Config, substitutions: Substitutions | None = None) -> dict[str, Any]:
    """``config`` as plain JSON-able data, safe to print (``python -m supervisor check``).

    Hidden as ``"***"``: every ``env`` and ``headers`` value (the names stay), the
    ``auth_token``, URL userinfo, query values and fragments (of ``url`` and of URLs in
    ``args``), and the values of secret-looking arguments and header lines in ``args``;
    with ``substitutions`` (from `load_config`), whatever a ``${VAR}`` reference took
    from the environment, wherever it stands (`Substitutions.hide`). Secrets written in
    the file itself elsewhere (in a URL's path, in an argument that does not look like one)
    cannot be recognised: keep them in ``env``/``headers`` or the environment.
    """
    data: dict[str, Any] = msgspec.to_builtins(config)
    if substitutions is not None:
        data = _hidden(data, substitutions)
    settings = data["settings"]
    if settings.get("auth_token") is not None:
        settings["auth_token"] = REDACTED
    for server in data["servers"]:
        del server["from_environ"]  # the loader's note of what ``${VAR}`` took, not the file's
        server["env"] = {key: REDACTED for key in server["env"]}
        server["headers"] = {key: REDACTED for key in server["headers"]}
        server["args"] = _redact_args(server["args"])
        if server["command"] is not None:
            server["command"] = redact_command(server["command"])
        if server["url"] is not None:
            server["url"] = _redact_url(server["url"])
    return data

