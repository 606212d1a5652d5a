"""The tool registry: every running server's tools, namespaced, categorised and validated.

A `Registry` is an actor. Its loop alone owns the table: what each server last published
(`PublishTools`), whether each server is up (`ServerAvailability`), and which server holds
each exposed name. After every change it swaps in a new `RegistryView`, an immutable
snapshot that the call path reads synchronously, without an actor hop::

    entry = registry.view.resolve("comfy__search_nodes")   # UnknownTool, with did-you-mean
    entry.validate(arguments)                               # InvalidArguments, naming fields

Guarantees:

- **Namespacing.** A server with ``namespace="prefix"`` exposes ``<server>__<tool>``; with
  ``"none"`` the tool keeps its own name.
- **No silent shadowing.** Two tools that would be exposed under one name are a collision:
  the tool that already held the name keeps it (if neither held it, the server registered
  first wins), the other is *not exposed*, and the refusal (naming both servers and the tool)
  is published as a ``tool_collision`` event and kept in `RegistrySnapshot.collisions`. When
  the holder stops listing the tool, or is withdrawn, the refused tool is exposed at once,
  without waiting for its server to publish again.
- **Stable listing across restarts.** A server that goes down is *not* removed: its tools stay
  listed, with ``Entry.available`` false, so ``tools/list`` does not flicker while the
  supervisor restarts it, and the call path fails fast with the breaker's error. Only
  `WithdrawServer` (the server left the config) removes them. Publishing a tool list marks
  the server available.
- **Categories.** A tool's category is the server config's mapping (keyed by the server's own
  tool name) if it has one, else the category the server gave in its metadata
  (`ToolSpec.category`), if that is one of `CATEGORIES`; else it has none. An unknown category
  in config is refused with a ``ValueError`` naming the server, the tool and the allowed
  categories, when the `PublishTools` message is built. Toolsets (`DEFAULT_TOOLSETS`, the
  seed's agent toolsets) are checked the same way when the registry is built.
- **Validation.** Arguments are checked against the tool's ``inputSchema`` with jsonschema:
  Draft 2020-12 unless the schema's ``$schema`` names another draft. Each validator is built
  and its schema checked once per (server, tool-list version, tool) — in the actor, never on
  the call path. A schema that is itself broken never crashes anything: that tool's calls go
  through unvalidated, the problem is logged once and shown in the snapshot. A ``$ref`` is
  resolved within the schema only: a URL is never fetched (it counts as unresolvable). A
  check follows at most `REF_BUDGET` refs; past that the call goes through unchecked.
- **Events.** ``tools_changed`` when the exposed set (names or specs) changes,
  ``tool_collision`` for each new collision, ``tool_schema_invalid`` for each broken schema.
- Bad requests (an unknown toolset or category in `ListTools`, a malformed message) are
  answered with a ``ValueError``/``TypeError`` to the asker and never kill the actor.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from types import MappingProxyType
from typing import Any, Final, Literal

import jsonschema.exceptions
import jsonschema.validators
import msgspec
import referencing
import trio

from protocol import Failure, InvalidArguments, ServerSpec, ToolSpec, UnknownTool

from ._events import publish
from ._fast_schema import compile_accepting
from ._runtime import Mailbox, Ref, Reply, serve

__all__ = [
    "CATEGORIES",
    "DEFAULT_TOOLSETS",
    "NAMESPACE_SEPARATOR",
    "ArgumentError",
    "Entry",
    "ListTools",
    "PublishTools",
    "Registry",
    "RegistrySnapshot",
    "RegistryView",
    "SchemaValidator",
    "ServerAvailability",
    "ServerTools",
    "SetToolsets",
    "Snapshot",
    "Sync",
    "ToolCollision",
    "ToolStatus",
    "WithdrawServer",
    "check_categories",
    "check_toolsets",
    "exposed_name",
]

log = logging.getLogger("supervisor.registry")

CATEGORIES: Final[tuple[str, ...]] = ("workflow", "node", "parameter", "validation", "search", "analysis")
"""The seed's six tool categories."""

DEFAULT_TOOLSETS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "main": ("workflow", "search", "node"),
        "rewrite": ("workflow", "parameter", "validation"),
        "debug": ("analysis", "validation", "workflow"),
        "search": ("search", "node"),
    }
)
"""The seed's per-agent toolsets: agent name -> the categories its tools come from."""

NAMESPACE_SEPARATOR: Final = "__"

MAX_REPORTED_ERRORS: Final = 5
"""At most this many argument errors are named in one `InvalidArguments`."""

_MAX_COLLECTED_ERRORS: Final = 50  # bounds the work spent on one hopeless call
_MAX_MESSAGE_CHARS: Final = 160  # jsonschema quotes the whole instance; big values are cut
# jsonschema's default registry fetches a remote ``$ref`` with a blocking urlopen (no timeout)
# in our event loop; an empty one (jsonschema adds the metaschemas) resolves local refs only.
_NO_REMOTE_REFS: Final = referencing.Registry()

REF_BUDGET: Final = 5_000
"""At most this many ``$ref`` (``$dynamicRef``, ``$recursiveRef``) are followed in one check."""
_TOO_COSTLY: Final = f"the arguments fail the input schema; finding where took over {REF_BUDGET} $ref lookups"


# -- config checks ----------------------------------------------------------------------


def _allowed() -> str:
    return ", ".join(CATEGORIES)


def check_categories(server: str, categories: Mapping[str, str]) -> dict[str, str]:
    """Return ``categories`` (tool -> category) as a dict, or raise ``ValueError``.

    The error names the server, the tool, the bad category and the allowed ones.
    """
    for tool, category in categories.items():
        if category not in CATEGORIES:
            raise ValueError(
                f"server {server!r}: tool {tool!r} has unknown category {category!r}; "
                f"allowed categories: {_allowed()}"
            )
    return dict(categories)


def check_toolsets(toolsets: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Return ``toolsets`` (name -> categories) with tuples, or raise ``ValueError``.

    The error names the toolset, the bad category and the allowed ones. A bare string in
    place of a list is refused too (it would otherwise read as a list of letters).
    """
    checked: dict[str, tuple[str, ...]] = {}
    for name, categories in toolsets.items():
        if isinstance(categories, str):
            raise ValueError(f"toolset {name!r}: expected a list of categories, got the string {categories!r}")
        for category in categories:
            if category not in CATEGORIES:
                raise ValueError(
                    f"toolset {name!r} has unknown category {category!r}; allowed categories: {_allowed()}"
                )
        checked[name] = tuple(categories)
    return checked


def exposed_name(server: str, tool: str, namespace: str) -> str:
    """The name a tool is exposed under: ``<server>__<tool>`` with ``prefix``, else ``tool``."""
    return f"{server}{NAMESPACE_SEPARATOR}{tool}" if namespace == "prefix" else tool


# -- messages ---------------------------------------------------------------------------


class PublishTools(msgspec.Struct, frozen=True):
    """A server's full tool list, sent whenever it connects or its list changes.

    ``version`` identifies the list: validators are cached per (server, version, tool), so a
    server that sends the same version again should send the same list (a changed schema is
    still noticed and recompiled). The latest message wins; versions are not ordered.
    ``categories`` maps the server's own tool names to categories; building the message
    raises ``ValueError`` when one is not in `CATEGORIES`. Answer (to ``ask``): the server's
    `ServerTools`.
    """

    server: str
    version: int
    tools: list[ToolSpec]
    namespace: Literal["prefix", "none"] = "none"
    categories: dict[str, str] = {}

    def __post_init__(self) -> None:
        if self.namespace not in ("prefix", "none"):
            raise ValueError(f"server {self.server!r}: namespace must be 'prefix' or 'none', not {self.namespace!r}")
        check_categories(self.server, self.categories)

    @classmethod
    def for_server(cls, spec: ServerSpec, version: int, tools: Iterable[ToolSpec]) -> PublishTools:
        """The message for ``tools`` of the configured server ``spec`` (its namespace and categories)."""
        return cls(
            server=spec.name,
            version=version,
            tools=list(tools),
            namespace=spec.namespace,
            categories=dict(spec.categories),
        )


class ServerAvailability(msgspec.Struct, frozen=True):
    """The server went down (``available=False``) or came back. Its tools stay listed.

    Unknown servers are ignored. Answer: None.
    """

    server: str
    available: bool


class WithdrawServer(msgspec.Struct, frozen=True):
    """The server was removed (config reload): forget its tools. Answer: None."""

    server: str


class ListTools(msgspec.Struct, frozen=True):
    """List exposed tools, optionally of one toolset and/or one category.

    Answer: ``list[ToolSpec]`` with exposed names, ``server`` and ``category`` set, in a
    stable order (servers in registration order, each server's tools in its own order).
    Tools of unavailable servers are included unless ``available_only``. An unknown toolset
    or category is answered with a ``ValueError``.
    """

    toolset: str | None = None
    category: str | None = None
    available_only: bool = False


class SetToolsets(msgspec.Struct, frozen=True):
    """Use ``toolsets`` (added to, or replacing by name, `DEFAULT_TOOLSETS`) from now on.

    Replaces the toolsets given at start, not those of an earlier `SetToolsets` on top of
    them. An invalid toolset is answered with a ``ValueError`` and changes nothing.
    Answer: None.
    """

    toolsets: dict[str, list[str]]


class Snapshot(msgspec.Struct, frozen=True):
    """Ask for the registry's state. Answer: a `RegistrySnapshot`."""


class Sync(msgspec.Struct, frozen=True):
    """A barrier: answered (None) once every message sent before it is handled, so the view
    then reflects them (a server's tools told as it connected, say)."""


# -- snapshots --------------------------------------------------------------------------


class ToolCollision(msgspec.Struct, frozen=True, kw_only=True):
    """A tool that was refused because another server already exposes its name."""

    exposed_name: str
    tool: str  # the refused tool's own name on its server
    server: str  # the server whose tool was refused
    kept_server: str  # the server that holds the name
    kept_tool: str
    message: str


class ServerTools(msgspec.Struct, frozen=True, kw_only=True):
    """One server's part of the registry. ``problems`` maps tool -> what is wrong with it."""

    server: str
    version: int
    available: bool
    namespace: str
    exposed: list[str]
    refused: list[str]
    problems: dict[str, str] = {}


class ToolStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    server: str
    tool: str
    category: str | None
    available: bool
    validated: bool  # False when the schema is broken and calls go through unchecked


class RegistrySnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The registry's state, as `Snapshot` answers it and ``/status`` shows it."""

    generation: int
    toolsets: dict[str, list[str]]
    servers: list[ServerTools]
    tools: list[ToolStatus]
    collisions: list[ToolCollision]


class ArgumentError(msgspec.Struct, frozen=True):
    """One way the arguments fail their schema: where (a JSON path) and which rule."""

    path: str  # like ``$.items[2].name``
    keyword: str  # the schema keyword that failed: required, type, enum, ...
    message: str  # ``type: expected integer, got string``

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


# -- validation -------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 3] + "..."


def _field(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"


def _describe(error: jsonschema.exceptions.ValidationError) -> list[ArgumentError]:
    """``error`` as one or more `ArgumentError` naming the failing field and the rule."""
    keyword = str(error.validator)
    path = error.json_path
    instance = error.instance
    if keyword == "type":
        expected = error.validator_value
        wanted = " or ".join(expected) if isinstance(expected, list) else str(expected)
        return [ArgumentError(path, keyword, f"type: expected {wanted}, got {_json_type(instance)}")]
    if keyword == "required" and isinstance(instance, Mapping):
        for name in error.validator_value or ():
            if name not in instance and error.message == f"{name!r} is a required property":
                return [ArgumentError(_field(path, name), keyword, f"required: {error.message}")]
    if keyword == "additionalProperties" and isinstance(instance, Mapping) and isinstance(error.schema, Mapping):
        declared = error.schema.get("properties", {})
        patterns = list(error.schema.get("patternProperties", {}))
        extras = [
            key
            for key in instance
            if key not in declared and not any(re.search(pattern, str(key)) for pattern in patterns)
        ]
        if extras:
            return [
                ArgumentError(_field(path, key), keyword, f"additionalProperties: property {key!r} is not allowed")
                for key in extras
            ]
    return [ArgumentError(path, keyword, _cut(f"{keyword}: {error.message}"))]


def _ordered_errors(errors: list[jsonschema.exceptions.ValidationError]) -> list[ArgumentError]:
    """All errors described, jsonschema's ``best_match`` first, then by relevance."""
    best = jsonschema.exceptions.best_match(errors)
    if best is None:
        return []
    ancestors = set()
    parent = best
    while parent is not None:
        ancestors.add(id(parent))
        parent = parent.parent
    rest = sorted(
        (e for e in errors if id(e) not in ancestors), key=jsonschema.exceptions.relevance, reverse=True
    )
    described: list[ArgumentError] = []
    for error in (best, *rest):
        for item in _describe(error):
            if item not in described:
                described.append(item)
    return described


def _never(_: Any) -> bool:
    return False


class _TooCostly(Exception):
    """A check followed `REF_BUDGET` references."""


class _Budget(threading.local):
    refs = REF_BUDGET  # refs the running check may still follow (checks are synchronous)


_budget = _Budget()
_BOUNDED: dict[type, type] = {}


def _counted(keyword: Any) -> Any:
    def follow(validator: Any, ref: Any, instance: Any, schema: Any) -> Any:
        _budget.refs -= 1
        if _budget.refs < 0:
            raise _TooCostly
        return keyword(validator, ref, instance, schema)

    return follow


def _bounded(cls: Any) -> Any:
    """``cls`` whose reference keywords count against the check's `REF_BUDGET`.

    Refs let a small schema reach one subschema along exponentially many paths (an
    ``anyOf`` of two refs to the next level, 20 levels deep); each is walked.
    """
    bounded = _BOUNDED.get(cls)
    if bounded is None:
        refs = {k: _counted(v) for k, v in cls.VALIDATORS.items() if k in ("$ref", "$dynamicRef", "$recursiveRef")}
        bounded = _BOUNDED[cls] = jsonschema.validators.extend(cls, refs)
    return bounded


class SchemaValidator:
    """The compiled input schema of one tool (one per server, version and tool).

    Built by the registry actor, used by the call path. ``problem`` is None while the schema
    works; once it is set (the schema failed its metaschema check, or failed while
    validating, for example an unresolvable ``$ref``), every call goes through unvalidated
    and the problem has been logged once. A ``$ref`` is resolved within the schema (and
    the drafts' metaschemas) only: nothing is ever fetched, so a ``$ref`` to a URL is
    unresolvable.
    """

    __slots__ = ("_accepts", "_costly_logged", "_is_valid", "_iter_errors", "_logged", "problem", "schema",
                 "validator_class")  # fmt: skip

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.problem: str | None = None
        self._logged = False
        self._costly_logged = False
        self._is_valid: Any = None
        self._iter_errors: Any = None
        self._accepts: Any = _never
        self.validator_class = "?"
        try:
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
            self.validator_class = cls.__name__
            cls.check_schema(schema)
            validator = _bounded(cls)(schema, registry=_NO_REMOTE_REFS)
        except jsonschema.exceptions.SchemaError as exc:
            self.problem = f"invalid input schema: {_cut(exc.message)} (at {exc.json_path})"
        except Exception as exc:  # a schema the library cannot even look at
            self.problem = f"invalid input schema: {type(exc).__name__}: {_cut(str(exc))}"
        else:
            self._is_valid = validator.is_valid
            self._iter_errors = validator.iter_errors
            # What the fast path accepts, jsonschema would too; the rest is jsonschema's.
            self._accepts = compile_accepting(schema) or _never

    @property
    def usable(self) -> bool:
        return self.problem is None

    def errors(self, arguments: Any) -> list[ArgumentError]:
        """The ways ``arguments`` fail the schema (best first); [] when they pass.

        Those of jsonschema's first 50 errors (one error may name several fields): the
        rest are not looked for. Also [] once the schema is known to be broken. A walk that
        would follow more than `REF_BUDGET` references stops there: the errors found by
        then, else one at ``$`` saying so.
        """
        return self._walk(arguments)[0]

    def _walk(self, arguments: Any) -> tuple[list[ArgumentError], bool]:
        """`errors`, and False when the walk was cut short (there may be more)."""
        if self.problem is not None:
            return [], True
        _budget.refs = REF_BUDGET
        collected: list[jsonschema.exceptions.ValidationError] = []
        try:
            for error in islice(self._iter_errors(arguments), _MAX_COLLECTED_ERRORS):
                collected.append(error)
        except _TooCostly:
            if not collected:
                return [ArgumentError("$", "$ref", _TOO_COSTLY)], True  # it says so itself
            complete = False
        except Exception as exc:  # e.g. an unresolvable $ref, a bad pattern, a cyclic schema
            self._broken(exc)
            return [], True
        else:
            complete = len(collected) < _MAX_COLLECTED_ERRORS
        try:
            return _ordered_errors(collected), complete
        except Exception:  # ranking is a nicety: never let it hide the errors
            return [item for error in collected for item in _describe(error)], complete

    def check(self, arguments: Any, *, tool: str, server: str) -> None:
        """Raise `InvalidArguments` when ``arguments`` fail the schema; else return None.

        The message names each failing field (a JSON path) and rule, best match first, at
        most `MAX_REPORTED_ERRORS` of them, and how many more were found ("at least" that
        many when the search stopped early); ``data["errors"]`` holds them as dicts. A broken
        schema lets the call through and is logged once. A check is bounded: one that would
        follow more than `REF_BUDGET` references stops there and lets that call through
        unchecked (the server still judges it), logged once per tool, instead of holding
        the event loop for as long as the schema makes it walk.
        """
        if self._accepts(arguments):
            return
        if self.problem is None:
            _budget.refs = REF_BUDGET
            try:
                if self._is_valid(arguments):
                    return
            except _TooCostly:
                if not self._costly_logged:
                    self._costly_logged = True
                    log.warning(
                        "tool %r of server %r: a call went unvalidated: its check took over %d $ref lookups",
                        tool, server, REF_BUDGET,
                    )
                return
            except Exception as exc:
                self._broken(exc)
            else:
                found, complete = self._walk(arguments)
                if found:
                    raise self._failure(found, tool=tool, server=server, cut=not complete)
        if self.problem is not None and not self._logged:
            self._logged = True
            log.warning("tool %r of server %r: calls go unvalidated: %s", tool, server, self.problem)

    def _broken(self, exc: Exception) -> None:
        self.problem = f"input schema failed while validating: {type(exc).__name__}: {_cut(str(exc))}"

    @staticmethod
    def _failure(found: list[ArgumentError], *, tool: str, server: str, cut: bool = False) -> InvalidArguments:
        shown = found[:MAX_REPORTED_ERRORS]
        more = len(found) - len(shown)
        text = "; ".join(str(e) for e in shown)
        if cut:
            text += f" (and at least {more} more)" if more else " (and maybe more)"
        elif more:
            text += f" (and {more} more)"
        return InvalidArguments(
            f"invalid arguments for tool {tool!r}: {text}",
            tool=tool,
            server=server,
            errors=[msgspec.to_builtins(e) for e in shown],
            more=more,
        )


# -- the view ---------------------------------------------------------------------------


class Entry(msgspec.Struct, frozen=True):
    """One exposed tool. ``spec`` carries the exposed name, ``server`` and ``category``."""

    name: str  # the exposed name
    server: str
    tool_name: str  # the server's own name for it: what is sent in tools/call
    spec: ToolSpec
    category: str | None
    available: bool
    validator: SchemaValidator

    def validate(self, arguments: Mapping[str, Any] | None) -> None:
        """Raise `InvalidArguments` unless ``arguments`` satisfy the tool's input schema.

        ``None`` counts as ``{}``. A tool whose schema is broken lets every call through.
        """
        self.validator.check({} if arguments is None else arguments, tool=self.name, server=self.server)


_NO_ENTRIES: Final[Mapping[str, Entry]] = MappingProxyType({})


class RegistryView(msgspec.Struct, frozen=True, kw_only=True):
    """An immutable snapshot of the exposed tools, read by the call path without a hop.

    A new view replaces the old one on every change; a view once handed out never changes.
    ``entries`` is in stable order: servers in registration order, each server's tools in
    its own order.
    """

    generation: int = 0
    entries: Mapping[str, Entry] = _NO_ENTRIES
    by_server_tool: Mapping[tuple[str, str], Entry] = MappingProxyType({})
    refused: Mapping[tuple[str, str], ToolCollision] = MappingProxyType({})
    toolsets: Mapping[str, tuple[str, ...]] = DEFAULT_TOOLSETS

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def get(self, name: str) -> Entry | None:
        return self.entries.get(name)

    def resolve(self, name: str) -> Entry:
        """The entry exposed as ``name``, or `UnknownTool` with did-you-mean suggestions.

        An entry of a server that is down is returned too (``available`` is False): the
        call path fails it with the breaker's error.
        """
        entry = self.entries.get(name)
        if entry is not None:
            return entry
        raise self._unknown(name)

    def resolve_on(self, server: str, tool: str) -> Entry:
        """The entry of ``server``'s own tool ``tool``, or `UnknownTool` (saying why)."""
        entry = self.by_server_tool.get((server, tool))
        if entry is not None:
            return entry
        refused = self.refused.get((server, tool))
        if refused is not None:
            raise UnknownTool(refused.message, tool=tool, server=server)
        raise self._unknown(tool, server=server)

    def _unknown(self, name: str, *, server: str | None = None) -> UnknownTool:
        if server is not None:
            names = [t for (s, t) in self.by_server_tool if s == server]
            where = f"server {server!r} offers no tool named {name!r}"
        else:
            names = list(self.entries)
            where = f"no running server offers a tool named {name!r}"
        suffix = f"{NAMESPACE_SEPARATOR}{name}"
        suggestions = [n for n in names if n.endswith(suffix)]
        for close in difflib.get_close_matches(name, names, n=3, cutoff=0.6):
            if close not in suggestions:
                suggestions.append(close)
        suggestions = suggestions[:3]
        hint = f"; did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        return UnknownTool(where + hint, tool=name, suggestions=suggestions)

    def categories_of(self, toolset: str) -> tuple[str, ...]:
        """The categories of ``toolset``; ``ValueError`` naming the known toolsets if unknown."""
        try:
            return self.toolsets[toolset]
        except KeyError:
            raise ValueError(f"unknown toolset {toolset!r}; known toolsets: {', '.join(self.toolsets)}") from None

    def select(
        self, toolset: str | None = None, category: str | None = None, *, available_only: bool = False
    ) -> list[Entry]:
        """The entries of ``toolset`` and/or ``category``, in the view's stable order."""
        wanted: tuple[str, ...] | None = None
        if toolset is not None:
            wanted = self.categories_of(toolset)
        if category is not None:
            if category not in CATEGORIES:
                raise ValueError(f"unknown category {category!r}; allowed categories: {_allowed()}")
            wanted = (category,) if wanted is None or category in wanted else ()
        return [
            entry
            for entry in self.entries.values()
            if (wanted is None or entry.category in wanted) and (entry.available or not available_only)
        ]

    def list_tools(
        self, toolset: str | None = None, category: str | None = None, *, available_only: bool = False
    ) -> list[ToolSpec]:
        """`select`'s tools as specs: exposed names, ``server`` and ``category`` set."""
        return [entry.spec for entry in self.select(toolset, category, available_only=available_only)]

    def tools_for_agent(self, agent: str) -> list[ToolSpec]:
        """The seed's ``get_tools_for_agent``: the tools of toolset ``agent``."""
        return self.list_tools(toolset=agent)


# -- the actor --------------------------------------------------------------------------


class _Server:
    """What one server last published. Owned by the registry loop."""

    __slots__ = ("available", "categories", "name", "namespace", "order", "tools", "validators", "version")

    def __init__(self, name: str, order: int) -> None:
        self.name = name
        self.order = order
        self.version = -1
        self.tools: tuple[ToolSpec, ...] = ()
        self.namespace = "none"
        self.categories: dict[str, str] = {}
        self.available = True
        self.validators: dict[str, SchemaValidator] = {}


class Registry:
    """The registry actor and its read side.

    ``view`` is the current `RegistryView`: read it on the call path, synchronously. Every
    change goes through the actor's mailbox (``ref``), as `PublishTools`,
    `ServerAvailability`, `WithdrawServer`, `ListTools` or `Snapshot`, or the async helpers
    that send them. Run the actor with ``await registry.run()`` (a supervision-tree child:
    it reports ``task_status.started(self)``; ``stop()`` ends it). The table lives on this
    object, so a restarted ``run()`` keeps every server's tools and a fresh mailbox.

    ``toolsets`` adds to (or replaces by name) `DEFAULT_TOOLSETS`; it is checked with
    `check_toolsets`. ``schema_compilations`` counts built validators (a test hook).
    """

    def __init__(
        self,
        *,
        toolsets: Mapping[str, Sequence[str]] | None = None,
        name: str = "registry",
        mailbox_size: int | float = 256,
    ) -> None:
        self.name = name
        self._toolsets = self._merged(toolsets or {})
        self._mailbox_size = mailbox_size
        self._mailbox: Mailbox[Any] = Mailbox(name, mailbox_size)
        self._servers: dict[str, _Server] = {}
        self._next_order = 0
        self._collisions: dict[tuple[str, str], ToolCollision] = {}
        self._view = RegistryView(toolsets=self._toolsets)
        self.schema_compilations = 0

    @staticmethod
    def _merged(toolsets: Mapping[str, Sequence[str]]) -> Mapping[str, tuple[str, ...]]:
        merged = dict(DEFAULT_TOOLSETS)
        merged.update(check_toolsets(toolsets))
        return MappingProxyType(merged)

    # -- read side (any task, no hop) ---------------------------------------------------

    @property
    def view(self) -> RegistryView:
        """The current immutable view. Cheap: one attribute read."""
        return self._view

    @property
    def ref(self) -> Ref[Any]:
        """The current incarnation's mailbox."""
        return self._mailbox.ref

    def status(self) -> dict[str, Any]:
        """A small summary for the supervision tree's status (the child's ``detail``)."""
        view = self._view
        return {
            "generation": view.generation,
            "tools": len(view),
            "servers": {s.name: {"version": s.version, "available": s.available} for s in self._servers.values()},
            "collisions": len(self._collisions),
        }

    # -- write side (through the mailbox) -----------------------------------------------

    async def publish_tools(
        self,
        server: str,
        version: int,
        tools: Iterable[ToolSpec],
        *,
        namespace: Literal["prefix", "none"] = "none",
        categories: Mapping[str, str] | None = None,
        timeout: float = math.inf,
    ) -> ServerTools:
        msg = PublishTools(
            server=server, version=version, tools=list(tools), namespace=namespace, categories=dict(categories or {})
        )
        return await self.ref.ask(msg, timeout)

    async def set_available(self, server: str, available: bool, *, timeout: float = math.inf) -> None:
        await self.ref.ask(ServerAvailability(server, available), timeout)

    async def withdraw(self, server: str, *, timeout: float = math.inf) -> None:
        await self.ref.ask(WithdrawServer(server), timeout)

    async def list_tools(
        self,
        toolset: str | None = None,
        category: str | None = None,
        *,
        available_only: bool = False,
        timeout: float = math.inf,
    ) -> list[ToolSpec]:
        return await self.ref.ask(ListTools(toolset=toolset, category=category, available_only=available_only), timeout)

    async def snapshot(self, *, timeout: float = math.inf) -> RegistrySnapshot:
        return await self.ref.ask(Snapshot(), timeout)

    async def sync(self, *, timeout: float = math.inf) -> None:
        """Return once every message sent to the registry before this call is handled."""
        await self.ref.ask(Sync(), timeout)

    async def set_toolsets(self, toolsets: Mapping[str, Sequence[str]], *, timeout: float = math.inf) -> None:
        await self.ref.ask(SetToolsets({name: list(cats) for name, cats in toolsets.items()}), timeout)

    def stop(self) -> None:
        """Ask the actor to stop once its queued messages are handled."""
        self._mailbox.stop()

    # -- the loop -----------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The actor's life: serve the mailbox until stopped or cancelled."""
        if self._mailbox.closed:
            self._mailbox = Mailbox(self.name, self._mailbox_size)
        mailbox = self._mailbox
        task_status.started(self)
        await serve(mailbox, self._behaviour)

    async def _behaviour(self, mailbox: Mailbox[Any]) -> None:
        async for msg, reply in mailbox:
            await self._handle(msg, reply)

    async def _handle(self, msg: Any, reply: Reply | None) -> None:
        try:
            if isinstance(msg, PublishTools):
                answer: Any = await self._publish_tools(msg)
            elif isinstance(msg, ServerAvailability):
                answer = self._set_availability(msg)
            elif isinstance(msg, WithdrawServer):
                answer = self._withdraw(msg)
            elif isinstance(msg, ListTools):
                answer = self._view.list_tools(msg.toolset, msg.category, available_only=msg.available_only)
            elif isinstance(msg, Snapshot):
                answer = self._snapshot()
            elif isinstance(msg, Sync):
                answer = None
            elif isinstance(msg, SetToolsets):
                self._toolsets = self._merged(msg.toolsets)
                self._view = msgspec.structs.replace(self._view, toolsets=self._toolsets)
                answer = None
            else:
                raise TypeError(f"registry {self.name!r} does not understand {type(msg).__name__}")
        except (ValueError, TypeError, Failure) as exc:  # the sender's mistake: refuse, live on
            if reply is not None:
                reply.fail(exc)
            else:
                log.warning("registry %r refused %s: %s", self.name, type(msg).__name__, exc)
            return
        if reply is not None:
            reply.send(answer)

    async def _publish_tools(self, msg: PublishTools) -> ServerTools:
        check_categories(msg.server, msg.categories)  # a message built around __post_init__
        server = self._servers.get(msg.server)
        if server is None:
            server = self._servers[msg.server] = _Server(msg.server, self._next_order)
            self._next_order += 1
        old = server.validators if server.version == msg.version else {}
        validators: dict[str, SchemaValidator] = {}
        for spec in msg.tools:
            if spec.name in validators:
                continue  # listed twice: the first one counts (the second is a collision)
            cached = old.get(spec.name)
            if cached is not None and cached.schema == spec.inputSchema:
                validators[spec.name] = cached
                continue
            validators[spec.name] = self._compile(msg.server, spec)
            await trio.lowlevel.checkpoint()  # a long list must not stall the loop
        server.version = msg.version
        server.tools = tuple(msg.tools)
        server.namespace = msg.namespace
        server.categories = dict(msg.categories)
        server.available = True
        server.validators = validators
        self._rebuild()
        return self._server_tools(server)

    def _compile(self, server: str, spec: ToolSpec) -> SchemaValidator:
        self.schema_compilations += 1
        validator = SchemaValidator(spec.inputSchema)
        if validator.problem is not None:
            log.warning("tool %r of server %r: calls go unvalidated: %s", spec.name, server, validator.problem)
            validator._logged = True
            publish(
                "tool_schema_invalid",
                reason=f"tool {spec.name!r} of server {server!r}: {validator.problem}",
                data={"server": server, "tool": spec.name},
            )
        return validator

    def _set_availability(self, msg: ServerAvailability) -> None:
        server = self._servers.get(msg.server)
        if server is None or server.available == msg.available:
            return
        server.available = msg.available
        self._rebuild()

    def _withdraw(self, msg: WithdrawServer) -> None:
        if self._servers.pop(msg.server, None) is not None:
            self._rebuild()

    def _category(self, server: _Server, spec: ToolSpec) -> str | None:
        configured = server.categories.get(spec.name)
        if configured is not None:
            return configured
        return spec.category if spec.category in CATEGORIES else None

    def _rebuild(self) -> None:
        """Recompute the exposed table from every server's list; swap in the new view.

        Each exposed name goes to the tool that held it in the previous view, if it is still
        listed; otherwise to the first claim in registration order. Every other claim is a
        collision.
        """
        previous = self._view
        servers = sorted(self._servers.values(), key=lambda s: s.order)
        # Every claim on every exposed name, in registration order, then list order.
        claims: dict[str, list[tuple[_Server, ToolSpec]]] = {}
        for server in servers:
            for spec in server.tools:
                claims.setdefault(exposed_name(server.name, spec.name, server.namespace), []).append((server, spec))
        winners: dict[str, tuple[_Server, ToolSpec]] = {}
        collisions: dict[tuple[str, str], ToolCollision] = {}
        for name, candidates in claims.items():
            winner = candidates[0]
            holder = previous.entries.get(name)
            if holder is not None:
                for candidate in candidates:
                    if candidate[0].name == holder.server and candidate[1].name == holder.tool_name:
                        winner = candidate
                        break
            winners[name] = winner
            kept_server, kept_spec = winner
            for loser, loser_spec in candidates:
                if loser is kept_server and loser_spec is kept_spec:
                    continue
                if loser is kept_server:
                    why = (
                        f"server {loser.name!r} lists tool {loser_spec.name!r} more than once; "
                        f"only the first is exposed"
                    )
                else:
                    why = (
                        f"tool {loser_spec.name!r} of server {loser.name!r} is not exposed: the name "
                        f"{name!r} is already exposed by server {kept_server.name!r} (tool "
                        f"{kept_spec.name!r}); set namespace = \"prefix\" on one of them to expose both"
                    )
                collisions.setdefault(
                    (loser.name, loser_spec.name),
                    ToolCollision(
                        exposed_name=name,
                        tool=loser_spec.name,
                        server=loser.name,
                        kept_server=kept_server.name,
                        kept_tool=kept_spec.name,
                        message=why,
                    ),
                )
        # Entries in the stable order: registration order, then each server's own order.
        entries: dict[str, Entry] = {}
        by_server_tool: dict[tuple[str, str], Entry] = {}
        for server in servers:
            for spec in server.tools:
                name = exposed_name(server.name, spec.name, server.namespace)
                won_server, won_spec = winners[name]
                if won_server is not server or won_spec is not spec:
                    continue
                category = self._category(server, spec)
                entry = Entry(
                    name=name,
                    server=server.name,
                    tool_name=spec.name,
                    spec=msgspec.structs.replace(spec, name=name, server=server.name, category=category),
                    category=category,
                    available=server.available,
                    validator=server.validators[spec.name],
                )
                entries[name] = entry
                by_server_tool[(server.name, spec.name)] = entry
        new_collisions = [c for key, c in collisions.items() if self._collisions.get(key) != c]
        self._collisions = collisions
        self._view = RegistryView(
            generation=previous.generation + 1,
            entries=MappingProxyType(entries),
            by_server_tool=MappingProxyType(by_server_tool),
            refused=MappingProxyType(dict(collisions)),
            toolsets=self._toolsets,
        )
        for collision in new_collisions:  # (logged as a warning by the event bus)
            publish("tool_collision", reason=collision.message, data=msgspec.to_builtins(collision))
        if [e.spec for e in previous.entries.values()] != [e.spec for e in entries.values()]:
            old_names, new_names = set(previous.entries), set(entries)
            changed = [n for n in new_names & old_names if previous.entries[n].spec != entries[n].spec]
            publish(
                "tools_changed",
                data={
                    "generation": self._view.generation,
                    "added": sorted(new_names - old_names),
                    "removed": sorted(old_names - new_names),
                    "changed": sorted(changed),
                },
            )

    def _server_tools(self, server: _Server) -> ServerTools:
        view = self._view
        exposed, refused, problems = [], [], {}
        seen: set[str] = set()
        for spec in server.tools:
            if spec.name in seen:
                continue
            seen.add(spec.name)
            entry = view.by_server_tool.get((server.name, spec.name))
            if entry is not None:
                exposed.append(entry.name)
            elif (server.name, spec.name) in view.refused:
                refused.append(spec.name)
                problems[spec.name] = view.refused[(server.name, spec.name)].message
            validator = server.validators.get(spec.name)
            if validator is not None and validator.problem is not None:
                problems[spec.name] = validator.problem
            elif (
                spec.name not in server.categories
                and spec.category is not None
                and spec.category not in CATEGORIES
                and spec.name not in problems
            ):
                problems[spec.name] = f"unknown category {spec.category!r} in the tool's metadata was ignored"
        return ServerTools(
            server=server.name,
            version=server.version,
            available=server.available,
            namespace=server.namespace,
            exposed=exposed,
            refused=refused,
            problems=problems,
        )

    def _snapshot(self) -> RegistrySnapshot:
        view = self._view
        return RegistrySnapshot(
            generation=view.generation,
            toolsets={name: list(categories) for name, categories in view.toolsets.items()},
            servers=[self._server_tools(s) for s in sorted(self._servers.values(), key=lambda s: s.order)],
            tools=[
                ToolStatus(
                    name=e.name,
                    server=e.server,
                    tool=e.tool_name,
                    category=e.category,
                    available=e.available,
                    validated=e.validator.usable,
                )
                for e in view.entries.values()
            ],
            collisions=list(self._collisions.values()),
        )

