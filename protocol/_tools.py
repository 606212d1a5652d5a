"""The MCP tool payloads the supervisor routes.

`ToolSpec` and `ToolAnnotations` describe a tool as a server lists it (field names exactly as
MCP spells them on the wire, camelCase, so they also match the mcp SDK's attribute names),
`CallParams` is the ``params`` of a ``tools/call`` request, and `ToolResult` is the copilot's
result shape, with its ``ext`` list.

Nothing here imports the mcp SDK: a `mcp.types.Tool` becomes a `ToolSpec` through
``ToolSpec.from_dict(tool.model_dump(by_alias=True, exclude_none=True, mode="json"))``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from msgspec import UNSET, UnsetType

from ._jsonrpc import INVALID_REQUEST, PARSE_ERROR, ProtocolError

__all__ = ["CallParams", "ToolAnnotations", "ToolResult", "ToolSpec"]


def _object_schema() -> dict[str, Any]:
    return {"type": "object"}


class ToolAnnotations(msgspec.Struct, omit_defaults=True):
    """A tool's behaviour hints. They are hints from the server, not promises.

    Absent hints are None and are left out of the JSON.
    """

    title: str | None = None
    readOnlyHint: bool | None = None
    destructiveHint: bool | None = None
    idempotentHint: bool | None = None
    openWorldHint: bool | None = None

    @property
    def retry_safe(self) -> bool:
        """True when the server says a repeated call is harmless.

        That is, ``readOnlyHint`` or ``idempotentHint`` is true; an absent hint counts as
        false, as MCP says. Whether to trust the server's word is the config's decision.
        """
        return self.readOnlyHint is True or self.idempotentHint is True


class ToolSpec(msgspec.Struct, omit_defaults=True):
    """One tool as a server lists it, plus where the supervisor found it.

    ``inputSchema`` (and ``outputSchema``) are kept exactly as the server sent them,
    ``$schema``, ``$defs`` and all; so are ``icons``, ``execution`` and ``_meta`` (``meta``
    here), which the supervisor passes on without reading (but for ``_meta.category``). ``category`` and ``server`` belong to the supervisor, not
    to MCP: `to_dict` leaves them out and `from_dict` never reads them from the wire. None
    fields are left out of the JSON; ``inputSchema`` is always present.
    """

    name: str
    description: str | None = None
    inputSchema: dict[str, Any] = msgspec.field(default_factory=_object_schema)
    outputSchema: dict[str, Any] | None = None
    annotations: ToolAnnotations | None = None
    category: str | None = None
    server: str | None = None
    title: str | None = None
    icons: list[dict[str, Any]] | None = None
    execution: dict[str, Any] | None = None
    meta: dict[str, Any] | None = msgspec.field(default=None, name="_meta")

    @property
    def retry_safe(self) -> bool:
        """The annotations' `ToolAnnotations.retry_safe`; False when there are none."""
        return self.annotations is not None and self.annotations.retry_safe

    @classmethod
    def from_dict(
        cls,
        d: dict[str, Any],
        *,
        server: str | None = None,
        category: str | None = None,
    ) -> ToolSpec:
        """Build a spec from an MCP wire tool dict (camelCase). Unknown keys are ignored.

        ``server`` and ``category`` come from the arguments, never from ``d``, so a server
        cannot claim to be another. Raises `ProtocolError` (invalid request) when ``d`` is not
        a valid tool.
        """
        try:
            spec = msgspec.convert(d, cls)
        except msgspec.ValidationError as exc:
            raise ProtocolError(INVALID_REQUEST, f"Invalid tool: {exc}") from None
        spec.server = server
        spec.category = category
        return spec

    def to_dict(self) -> dict[str, Any]:
        """The MCP wire dict for this tool (no ``category`` or ``server``)."""
        d = msgspec.to_builtins(self)
        d.pop("category", None)
        d.pop("server", None)
        return d


class CallParams(msgspec.Struct):
    """The ``params`` of a ``tools/call`` request.

    ``arguments`` is always sent, ``{}`` when empty (some servers refuse a call without it).
    ``meta`` travels as ``_meta``; it is absent (`msgspec.UNSET`) unless given, and an absent
    ``meta`` is left out of the JSON.
    """

    name: str
    arguments: dict[str, Any] = {}
    meta: dict[str, Any] | None | UnsetType = msgspec.field(default=UNSET, name="_meta")


class ToolResult(msgspec.Struct):
    """The copilot's standard tool result (the seed's ``MCPToolResult``).

    ``ext`` is always a list, never None: ``ToolResult(..., ext=None)`` stores ``[]``, and
    `to_json` always writes ``"ext": [...]``. All five keys are always written.
    """

    tool_name: str
    success: bool
    result: Any = None
    error: str | None = None
    ext: list[dict[str, Any]] = []

    def __post_init__(self) -> None:
        if self.ext is None:
            self.ext = []

    def to_json(self) -> str:
        """This result as JSON text, non-ASCII characters kept as they are."""
        return _encoder.encode(self).decode()

    @classmethod
    def from_json(cls, s: str | bytes) -> ToolResult:
        """Parse `to_json`'s output. ``"ext": null`` (or no ``ext``) reads as ``[]``.

        Raises `ProtocolError`: a parse error (-32700) for invalid JSON, an invalid request
        (-32600) for JSON of the wrong shape. Nothing else.
        """
        try:
            r = _result_decoder.decode(s)
        except msgspec.ValidationError as exc:
            raise ProtocolError(INVALID_REQUEST, f"Invalid tool result: {exc}") from None
        except Exception as exc:
            raise ProtocolError(PARSE_ERROR, f"Parse error: {type(exc).__name__}: {exc}") from None
        return cls(r.tool_name, r.success, r.result, r.error, r.ext if r.ext is not None else [])


# What `ToolResult.from_json` reads: ``ext`` may also be null on the way in.
class _ToolResultIn(msgspec.Struct):
    tool_name: str
    success: bool
    result: Any = None
    error: str | None = None
    ext: list[dict[str, Any]] | None = None


_encoder: Final = msgspec.json.Encoder()
_result_decoder: Final = msgspec.json.Decoder(_ToolResultIn)
