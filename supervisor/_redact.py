"""Keep configured secrets out of the text that leaves the supervisor: `Redactor`.

Upstream text is copied into what the supervisor says: a remote server's refusal body (a
gateway echoing ``Authorization: Bearer ...`` back), a stdio server's last stderr lines
(a server printing its own ``DATABASE_URL``), an HTTP client's log line naming the URL
with its ``?api_key=``. A `Redactor` knows the secrets of the configured servers, and
those its owner adds (the daemon's ``auth_token``), and replaces each occurrence of one in
outgoing text by ``***``.

What is secret is less than what `check` hides (`supervisor._config.redacted`, whose
patterns are used here): `check` shows a config, where hiding a harmless value costs
nothing, while these are hidden in every message. An ``env`` value, a ``headers`` value and
a URL's query value whose name says it is secret (``DB_PASS``, ``OPENAI_API_KEY``,
``Authorization``, ``?api_key=``: `_SECRET_NAME`), and of a header value the token
after an auth scheme (``Bearer x``: ``x``); a URL's userinfo password (of ``url``, of a URL
in ``args``, ``env`` or ``headers``); the value of a secret-looking argument (``--token x``,
``--api-key=x``) and of a secret-looking header line in ``args`` (``Authorization: Bearer
x``). And a value a ``${VAR}`` reference took from the environment when VAR's name says
it is secret (``${GITHUB_TOKEN}``, ``${OPENAI_API_KEY}``, ``${DB_PASS}``: `_SECRET_NAME`),
wherever the reference stood: an argument (``["serve", "${GITHUB_TOKEN}"]``), a URL's path,
inside an ``env`` value under an innocuous name (``CONFIG=token=${OPENAI_API_KEY}``).
`load_config` notes those in the spec (`ServerSpec.from_environ`), so a reload's new specs
bring their values along (the old ones retired as any). A value a server's name holds is
never hidden (the name would be, everywhere).

Guarantees:

- A secret `MIN_SECRET` (6) characters long or more is replaced wherever it appears, the
  longest first (a value holding another is hidden whole). Shorter values are NOT hidden:
  a value like ``1``, ``true`` or ``dev`` is no secret, and hidden everywhere it would
  mangle every message (``127.0.0.1``).
- Once told, a secret is kept for the redactor's life: a server removed or reconfigured by
  a reload may have left its old values in a status or an event still around (up to
  `MAX_RETIRED` past values are kept besides the current ones).
- Idempotent: redacting redacted text changes nothing.

Not covered: a secret under a name that does not say so (``?k=...``, ``MY_VAR``), a
secret written elsewhere in a spec (a URL's path, an argument that does not look secret),
a value a ``${VAR}`` whose name says nothing of a secret brought in elsewhere (``${HOME}``,
``${PORT}``, ``${MY_VAR}``: hidden everywhere, a path or a number would be blanked out of
every message), a ``${VAR:-default}``'s default (written in the file, not taken from the
environment), a spec built by hand without its ``from_environ``, a tool's own result, and
text a secret was transformed into (base64, percent-encoding beyond the URL's own query).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import msgspec
from mcp import MCPError

from actors import EventBus
from protocol import ChildStatus, Event, Failure, ServerSpec

from ._config import _SECRET_FLAG, _SECRET_HEADER, _URL_ARG, REDACTED

__all__ = ["MIN_SECRET", "RedactingBus", "Redactor", "redacting_logs", "spec_secrets"]

MIN_SECRET: Final = 6
"""Values shorter than this are not redacted (see the module docstring)."""

MAX_RETIRED: Final = 64
"""How many values no longer configured are still redacted (the most recent)."""

_SECRET_NAME = re.compile(
    r"key|pass|pwd|secret|token(?!izer)|authori[sz]|auth(?!or)|credential|cookie|session|private|signature|salt|dsn|sig$",
    re.I,
)
"""A name (of an ``env`` variable, a header, a URL's query parameter) whose value is a
secret: ``DB_PASS``, ``MYSQL_PWD``, ``STRIPE_KEY``, ``Authorization``, ``X-Api-Key``,
``?api_key=``. Any other value (``HOME=/srv/app``, ``Accept: application/json``,
``?transport=stream``) hidden wherever it appears would blank out paths and words in every
message; of those, only a URL's password is hidden."""

_AUTH_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*\s+(\S.*)", re.S)
"""``Bearer xyz`` (any RFC 9110 auth scheme, then the credentials)."""


def _url_secrets(url: str) -> Iterable[str]:
    """A URL's userinfo password (and the userinfo whole) and the values of its query
    parameters whose names say they are secret (`_SECRET_NAME`), as written and
    percent-decoded."""
    try:
        parts = urlsplit(url.strip())
        password = parts.password
    except ValueError:
        return
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        yield userinfo
        if password:
            yield password
            yield unquote(password)
    for name_value in parts.query.split("&"):
        name, sep, value = name_value.partition("=")
        if sep and _SECRET_NAME.search(unquote(name)):
            yield value
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if _SECRET_NAME.search(name):
            yield value


def _value_secrets(value: str, header: bool = True) -> Iterable[str]:
    """A secret value (of ``env``, of a header): itself (of a header, the credentials after
    an auth scheme instead, when long enough), and the secrets of a URL in it."""
    scheme = _AUTH_SCHEME.fullmatch(value.strip()) if header else None
    credentials = scheme.group(1).strip() if scheme else ""
    if len(credentials) >= MIN_SECRET:
        yield credentials  # shown as ``Bearer ***``
    else:
        yield value
    if _URL_ARG.fullmatch(value.strip()):
        yield from _url_secrets(value)


def _arg_secrets(args: list[str]) -> Iterable[str]:
    """What `check` hides in ``args`` (`supervisor._config._redact_args`'s notion)."""
    hide_next = False
    for arg in args:
        if hide_next:
            hide_next = False
            yield from _value_secrets(arg)
            continue
        flag, sep, value = arg.partition("=")
        if _SECRET_FLAG.fullmatch(flag):
            if sep:
                yield from _value_secrets(value)
            else:
                hide_next = True
            continue
        for candidate in (arg, value) if sep and flag.startswith("-") else (arg,):
            if _URL_ARG.fullmatch(candidate):
                yield from _url_secrets(candidate)
            elif header := _SECRET_HEADER.fullmatch(candidate):
                yield from _value_secrets(candidate[header.end(1):].lstrip().removeprefix(":").strip())


def spec_secrets(spec: ServerSpec) -> set[str]:
    """Every secret of ``spec`` `MIN_SECRET` characters long or more (with those its
    ``from_environ`` names: see the module docstring)."""
    found: list[str] = []
    for name, value in spec.env.items():
        if _SECRET_NAME.search(name):
            found.extend(_value_secrets(value, header=False))
        elif _URL_ARG.fullmatch(value.strip()):
            found.extend(_url_secrets(value))
    for name, value in spec.headers.items():
        if _SECRET_NAME.search(name):
            found.extend(_value_secrets(value))
        elif _URL_ARG.fullmatch(value.strip()):
            found.extend(_url_secrets(value))
    if spec.url is not None:
        found.extend(_url_secrets(spec.url))
    found.extend(_arg_secrets(list(spec.args)))
    for name, value in spec.from_environ.items():  # what ``${VAR}`` took, wherever it went
        if _SECRET_NAME.search(name):
            found.extend(_value_secrets(value, header=False))
        elif _URL_ARG.fullmatch(value.strip()):
            found.extend(_url_secrets(value))
    return {value for value in found if len(value) >= MIN_SECRET}


class Redactor:
    """Replaces every configured secret in a text by ``***`` (see the module docstring).

    ``server(spec)`` tells it a server's spec (added, or changed by a reload), ``forget``
    one removed; ``add_source(source)`` a callable read at every use for more secrets
    (``lambda: [daemon.config.settings.auth_token]``: a reload that changes the token is
    followed without telling)."""

    def __init__(self, specs: Iterable[ServerSpec] = ()) -> None:
        self._by_server: dict[str, frozenset[str]] = {}
        self._retired: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._sources: list[Callable[[], Iterable[str | None]]] = []
        self._extra: frozenset[str] = frozenset()
        self._version = 0  # of what it knows: the pattern is rebuilt when it changes
        self._cache: tuple[Any, re.Pattern[str] | None] = (None, None)
        #: Log records are redacted in whatever thread logs them (an embedding host's too).
        self._lock = threading.RLock()  # (a source that logs comes back here)
        for spec in specs:
            self.server(spec)

    def server(self, spec: ServerSpec) -> None:
        """Know ``spec``'s secrets (those of a spec it replaces are kept as retired)."""
        new = frozenset(spec_secrets(spec))
        with self._lock:
            old = self._by_server.get(spec.name, frozenset())
            self._by_server[spec.name] = new
            self._retire(old - new)
            self._version += 1

    def forget(self, name: str) -> None:
        """Server ``name`` is no longer configured: its secrets are kept as retired."""
        with self._lock:
            self._retire(self._by_server.pop(name, frozenset()))
            self._version += 1

    def add_source(self, source: Callable[[], Iterable[str | None]]) -> None:
        """Also hide what ``source()`` returns (None and short values skipped), read anew at
        every use; a value it stops returning is kept as retired."""
        with self._lock:
            self._sources.append(source)
            self._version += 1

    def _retire(self, values: Iterable[str]) -> None:
        for value in values:
            self._retired[value] = None
            self._retired.move_to_end(value)
        while len(self._retired) > MAX_RETIRED:
            self._retired.popitem(last=False)

    def _pattern(self) -> re.Pattern[str] | None:
        with self._lock:
            return self._current()

    def _current(self) -> re.Pattern[str] | None:
        extra: set[str] = set()
        for source in self._sources:
            try:
                extra.update(v for v in source() if isinstance(v, str) and len(v) >= MIN_SECRET)
            except Exception:  # a source that cannot answer now: the others still count
                extra.update(self._extra)
        if self._extra - extra:  # e.g. a token a reload changed
            self._retire(self._extra - extra)
            self._version += 1
        self._extra = frozenset(extra)
        key = (self._version, self._extra)
        cached, pattern = self._cache
        if key != cached:  # rebuilt only when something changed, not on every use
            names = list(self._by_server)
            values = frozenset().union(*self._by_server.values(), self._retired, extra)
            # A value a server's name holds is no secret (AUTH_PROVIDER=github for the server
            # "github"), and hidden it would rename the server in every status and label.
            kept = [v for v in values if not any(v in name for name in names)]
            ordered = sorted(kept, key=len, reverse=True)  # a value holding another goes whole
            pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
            self._cache = (key, pattern)
        return pattern

    def __call__(self, text: str) -> str:
        """``text`` with every secret as ``***``."""
        pattern = self._pattern()
        if pattern is None or not isinstance(text, str):
            return text
        return pattern.sub(REDACTED, text)

    def deep(self, value: Any) -> Any:
        """``value`` with every string in it redacted (dicts, lists, tuples, msgspec Structs
        walked; not dict keys, which are names); the same object when nothing changed."""
        pattern = self._pattern()
        return value if pattern is None else _deep(value, pattern)

    def status(self, status: ChildStatus) -> ChildStatus:
        """A status tree with ``last_exit`` and every string of ``detail`` redacted."""
        return self.deep(status)

    def event(self, event: Event) -> Event:
        """An event with ``reason`` and every string of ``data`` redacted."""
        return self.deep(event)

    def exception(self, exc: BaseException) -> BaseException:
        """``exc`` redacted in place (and returned): a `Failure`'s message and data, an
        ``MCPError``'s message and data; other exceptions as they are."""
        if isinstance(exc, Failure):
            exc.message = self(exc.message)
            exc.args = (exc.message, *exc.args[1:])
            exc.data = self.deep(exc.data)
        elif isinstance(exc, MCPError):
            message, data = self(exc.error.message), self.deep(exc.error.data)
            if message != exc.error.message or data is not exc.error.data:
                exc.error = exc.error.model_copy(update={"message": message, "data": data})
                exc.args = (exc.error.code, message, data)
        return exc


def _deep(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(REDACTED, value)
    if isinstance(value, dict):  # (its keys are names, not text: kept)
        out = {k: _deep(v, pattern) for k, v in value.items()}
        return value if _same(out, value) else out
    if isinstance(value, (list, tuple)):
        items = [_deep(v, pattern) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else type(value)(items)
    if isinstance(value, msgspec.Struct):
        changes = {}
        for field in value.__struct_fields__:
            old = getattr(value, field)
            new = _deep(old, pattern)
            if new is not old:
                changes[field] = new
        return msgspec.structs.replace(value, **changes) if changes else value
    return value


def _same(a: dict[Any, Any], b: dict[Any, Any]) -> bool:
    return len(a) == len(b) and all(k in b and b[k] is v for k, v in a.items())


class _RedactingFilter(logging.Filter):
    """Redacts a record's message (formatted with its arguments) and its traceback."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format: the handler reports it as it would
            return True
        shown = self.redact(message)
        if shown != message:
            record.msg, record.args = shown, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


@contextlib.contextmanager
def redacting_logs(redact: Callable[[str], str], handlers: Iterable[logging.Handler] | None = None) -> Iterator[None]:
    """Within it, redact every record ``handlers`` (default: the root logger's, as
    ``logging.basicConfig`` made them) write, whatever logger it came from. A filter on a
    handler, not on a logger: a logger's filters do not see the records its children
    propagate (``httpx``, ``supervisor.gateway``, ...)."""
    chosen = list(logging.getLogger().handlers if handlers is None else handlers)
    flt = _RedactingFilter(redact)
    for handler in chosen:
        handler.addFilter(flt)
    try:
        yield
    finally:
        for handler in chosen:
            handler.removeFilter(flt)


class RedactingBus(EventBus):
    """An `EventBus` whose events are redacted before they are logged or delivered: every
    subscriber, and the bus's own log line, sees them without secrets."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def publish(self, event: Event) -> None:
        super().publish(self.redactor.event(event))
