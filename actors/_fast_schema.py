"""A fast path in front of jsonschema: accept the common tool schemas in a few µs.

``compile_accepting(schema)`` turns a schema written in a small subset of JSON Schema 2020-12
(the subset that function-signature tool schemas use: ``type``, ``properties``,
``required``, ``additionalProperties``, ``items``, ``anyOf``/``allOf``, string ``enum`` and
``const``, numeric and length bounds, and annotations) into a predicate, or answers None
for any schema outside it.

Guarantee: the predicate only ever *accepts*. When it returns True, jsonschema (the
validator `SchemaValidator` builds: 2020-12, formats as annotations) would find the
arguments valid too. When it returns False, nothing is decided: the caller asks jsonschema,
which gives the verdict and the error messages. So the predicate may be stricter than the
spec (an instance of a subclass of ``dict``, an integral float for ``integer``, a ``bool``
in an ``enum``: all fall back), never looser. ``tests/test_fast_schema.py`` checks this
against jsonschema on generated schemas and instances.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

__all__ = ["compile_accepting"]

Predicate = Callable[[Any], bool]

DRAFT_2020_12: Final = "https://json-schema.org/draft/2020-12/schema"

_JSON_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),  # exact types: bool is not an integer, 1.0 falls back
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}
_EXACT: Final = frozenset(t for types in _JSON_TYPES.values() for t in types)
#: Keywords that never make an instance invalid (formats are annotations in 2020-12 unless
#: a format checker is given, and `SchemaValidator` gives none).
_ANNOTATIONS: Final = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly", "format"}
)


class _Unsupported(Exception):
    pass


def compile_accepting(schema: Any) -> Predicate | None:
    """A predicate that accepts (only) instances valid under ``schema``, or None when
    ``schema`` uses anything outside the subset."""
    if isinstance(schema, dict) and schema.get("$schema", DRAFT_2020_12) != DRAFT_2020_12:
        return None
    try:
        return _compile(schema, top=True)
    except _Unsupported:
        return None


def _number(value: Any) -> float:
    if type(value) not in (int, float):
        raise _Unsupported
    return value


def _count(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise _Unsupported
    return value


def _compile(schema: Any, *, top: bool = False) -> Predicate:
    if schema is True:
        return _accept_all
    if type(schema) is not dict:
        raise _Unsupported
    checks: list[Predicate] = []
    for key, value in schema.items():
        if key in _ANNOTATIONS or (top and key == "$schema"):
            continue
        maker = _KEYWORDS.get(key)
        if maker is None:
            raise _Unsupported
        checks.append(maker(value, schema))
    checks = [c for c in checks if c is not _accept_all]

    def accepts(instance: Any) -> bool:
        if type(instance) not in _EXACT:
            return False
        for check in checks:
            if not check(instance):
                return False
        return True

    return accepts


def _accept_all(instance: Any) -> bool:
    return True


def _type(value: Any, _: dict[str, Any]) -> Predicate:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or any(n not in _JSON_TYPES for n in names):
        raise _Unsupported
    allowed = frozenset(t for n in names for t in _JSON_TYPES[n])
    return lambda instance: type(instance) in allowed


def _properties(value: Any, _: dict[str, Any]) -> Predicate:
    if type(value) is not dict:
        raise _Unsupported
    compiled = {name: _compile(sub) for name, sub in value.items()}
    checked = [(name, check) for name, check in compiled.items() if check is not _accept_all]

    def properties(instance: Any) -> bool:
        if type(instance) is dict:
            for name, check in checked:
                if name in instance and not check(instance[name]):
                    return False
        return True

    return properties


def _required(value: Any, _: dict[str, Any]) -> Predicate:
    if type(value) is not list or any(type(name) is not str for name in value):
        raise _Unsupported
    names = tuple(value)
    return lambda instance: type(instance) is not dict or all(name in instance for name in names)


def _additional_properties(value: Any, schema: dict[str, Any]) -> Predicate:
    if "patternProperties" in schema:
        raise _Unsupported
    declared = frozenset(schema.get("properties", {}))
    if value is False:
        return lambda instance: type(instance) is not dict or declared.issuperset(instance)
    check = _compile(value)
    if check is _accept_all:
        return _accept_all
    return lambda instance: type(instance) is not dict or all(
        check(item) for key, item in instance.items() if key not in declared
    )


def _items(value: Any, _: dict[str, Any]) -> Predicate:
    check = _compile(value)
    if check is _accept_all:
        return _accept_all
    return lambda instance: type(instance) is not list or all(check(item) for item in instance)


def _any_of(value: Any, _: dict[str, Any]) -> Predicate:
    if type(value) is not list or not value:
        raise _Unsupported
    subs = [_compile(sub) for sub in value]
    return lambda instance: any(sub(instance) for sub in subs)


def _all_of(value: Any, _: dict[str, Any]) -> Predicate:
    if type(value) is not list or not value:
        raise _Unsupported
    subs = [_compile(sub) for sub in value]
    return lambda instance: all(sub(instance) for sub in subs)


def _enum(value: Any, _: dict[str, Any]) -> Predicate:
    # Strings only: JSON equality differs from Python's for numbers and booleans.
    if type(value) is not list or any(type(item) is not str for item in value):
        raise _Unsupported
    allowed = frozenset(value)
    return lambda instance: type(instance) is str and instance in allowed


def _const(value: Any, schema: dict[str, Any]) -> Predicate:
    if type(value) is not str:
        raise _Unsupported
    return lambda instance: type(instance) is str and instance == value


def _bound(compare: Callable[[float, float], bool]) -> Callable[[Any, dict[str, Any]], Predicate]:
    def make(value: Any, _: dict[str, Any]) -> Predicate:
        limit = _number(value)
        return lambda instance: type(instance) not in (int, float) or compare(instance, limit)

    return make


def _length(kind: type, compare: Callable[[int, int], bool]) -> Callable[[Any, dict[str, Any]], Predicate]:
    def make(value: Any, _: dict[str, Any]) -> Predicate:
        limit = _count(value)
        return lambda instance: type(instance) is not kind or compare(len(instance), limit)

    return make


_KEYWORDS: Final[dict[str, Callable[[Any, dict[str, Any]], Predicate]]] = {
    "type": _type,
    "properties": _properties,
    "required": _required,
    "additionalProperties": _additional_properties,
    "items": _items,
    "anyOf": _any_of,
    "allOf": _all_of,
    "enum": _enum,
    "const": _const,
    "minimum": _bound(lambda x, limit: x >= limit),
    "maximum": _bound(lambda x, limit: x <= limit),
    "exclusiveMinimum": _bound(lambda x, limit: x > limit),
    "exclusiveMaximum": _bound(lambda x, limit: x < limit),
    "minLength": _length(str, lambda n, limit: n >= limit),
    "maxLength": _length(str, lambda n, limit: n <= limit),
    "minItems": _length(list, lambda n, limit: n >= limit),
    "maxItems": _length(list, lambda n, limit: n <= limit),
}
