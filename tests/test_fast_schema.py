"""The fast path only ever accepts what jsonschema accepts, and it does accept real schemas."""

from __future__ import annotations

import math
from typing import Any, Literal

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, Field

from actors._fast_schema import compile_accepting
from actors._registry import SchemaValidator

TYPES = ["object", "array", "string", "integer", "number", "boolean", "null"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(-5, 5)
    | st.sampled_from([0.0, 1.0, -1.0, math.inf, math.nan, 2**70])
    | st.sampled_from(["", "a", "ab", "abc", "b"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), inner, max_size=3),
    max_leaves=8,
)

# Also odd Python values a caller might pass: tuples, dict subclasses, non-str keys.
class _Dict(dict):
    pass


odd_values = st.sampled_from([(), ("a",), _Dict(a=1), {1: "a"}, {"a": (1,)}, b"a", 1 + 0j])


LEAF_KEYWORDS = {
    "type": st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True),
    "enum": st.lists(st.sampled_from(["a", "b", "ab"]), min_size=1, max_size=3, unique=True) | st.just([1, True]),
    "const": st.sampled_from(["a", 1, True, None]),
    "minimum": st.sampled_from([0, 1, 1.5, -2]),
    "maximum": st.sampled_from([0, 1, 2.5]),
    "exclusiveMinimum": st.sampled_from([0, 1]),
    "exclusiveMaximum": st.sampled_from([1, 3]),
    "minLength": st.integers(0, 3),
    "maxLength": st.integers(0, 3),
    "minItems": st.integers(0, 2),
    "maxItems": st.integers(0, 2),
    "title": st.just("t"),
    "default": json_values,
    "format": st.sampled_from(["email", "date-time"]),
    "pattern": st.just("^a"),  # outside the subset: no fast path
}


def _pick(keywords: dict[str, st.SearchStrategy[Any]], most: int) -> st.SearchStrategy[dict[str, Any]]:
    """Schemas made of up to ``most`` of ``keywords``: few keywords, so many instances pass."""
    return st.lists(st.sampled_from(sorted(keywords)), max_size=most, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({name: keywords[name] for name in names})
    )


def schemas(depth: int = 2) -> st.SearchStrategy[Any]:
    leaf = _pick(LEAF_KEYWORDS, 2) | st.booleans()
    if depth == 0:
        return leaf
    inner = schemas(depth - 1)
    return leaf | _pick(
        {
            "type": st.sampled_from(["object", "array"]),
            "properties": st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
            "required": st.lists(st.sampled_from(["a", "b", "d"]), max_size=2, unique=True),
            "additionalProperties": st.booleans() | inner,
            "items": inner,
            "anyOf": st.lists(inner, min_size=1, max_size=2),
            "allOf": st.lists(inner, min_size=1, max_size=2),
        },
        3,
    )


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas(), instance=json_values | odd_values)
def test_what_the_fast_path_accepts_jsonschema_accepts(schema, instance):
    validator = jsonschema.Draft202012Validator(schema)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError:
        return
    accepts = compile_accepting(schema)
    if accepts is not None and accepts(instance):
        assert validator.is_valid(instance), (schema, instance)


class Point(BaseModel):
    x: float
    y: float


SCALARS = [None, True, False, 0, 1, 2, -3, 1.0, 1.5, 2.5, -2.0, math.inf, math.nan, 2**70, "", "a", "ab", "abc", "c"]
SAMPLES = SCALARS + [[], [1], ["a", "b"], [1, 2, 3], {}, {"a": 1}, {"a": "a", "b": None}, {"d": 1}] + [
    (), _Dict(a=1), {1: "a"}, b"a", 1 + 0j
]
EACH_KEYWORD = [
    *({"type": t} for t in TYPES),
    {"type": ["integer", "null"]},
    {"type": ["number", "string"]},
    {"enum": ["a", "b"]},
    {"const": "a"},
    *({keyword: limit} for keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") for limit in (0, 1, 1.5)),
    *({keyword: n} for keyword in ("minLength", "maxLength", "minItems", "maxItems") for n in (0, 1, 2)),
    {"properties": {"a": {"type": "string"}, "b": {"type": "null"}}},
    {"properties": {"a": {"type": "integer", "minimum": 1}}, "required": ["a"]},
    {"required": ["a", "b"]},
    {"properties": {"a": True}, "additionalProperties": False},
    {"additionalProperties": {"type": "integer"}},
    {"items": {"type": "integer"}},
    {"items": {"enum": ["a", "b"]}},
    {"anyOf": [{"type": "string"}, {"type": "null"}]},
    {"allOf": [{"type": "integer"}, {"minimum": 1}]},
    {"type": "string", "format": "email", "title": "t", "default": 3},
    {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"},
]


def test_every_keyword_of_the_subset_is_sound_on_each_sample():
    taken = 0
    for schema in EACH_KEYWORD:
        accepts = compile_accepting(schema)
        assert accepts is not None, schema
        validator = jsonschema.Draft202012Validator(schema)
        for instance in SAMPLES:
            if accepts(instance):
                taken += 1
                assert validator.is_valid(instance), (schema, instance)
    assert taken > 200  # and it does accept: a fast path that declines everything is no path


def test_schemas_outside_the_subset_have_no_fast_path():
    for schema in (
        {"pattern": "^a"},
        {"oneOf": [{"type": "string"}]},
        {"not": {"type": "string"}},
        {"$ref": "#/$defs/x", "$defs": {"x": {}}},
        {"patternProperties": {"^a": {}}, "additionalProperties": False},
        {"prefixItems": [{"type": "string"}]},
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"},
        {"properties": {"a": {"$schema": "https://json-schema.org/draft/2020-12/schema"}}},
        {"enum": [1.0]},
        {"enum": [1, True]},
        {"const": 1},
        False,
    ):
        assert compile_accepting(schema) is None, schema


async def _tool_schemas() -> dict[str, dict[str, Any]]:
    app = MCPServer("shapes")

    @app.tool()
    def echo(text: str) -> str:
        return text

    @app.tool()
    def search(query: str, limit: int = 10, kinds: list[str] | None = None, exact: bool = False) -> str:
        return query

    @app.tool()
    def bounded(n: int = Field(ge=1, le=100), mode: Literal["fast", "slow"] = "fast") -> str:
        return mode

    @app.tool()
    def nested(point: Point) -> str:  # $defs/$ref: outside the subset
        return ""

    return {tool.name: tool.input_schema for tool in await app.list_tools()}


async def test_function_signature_schemas_take_the_fast_path():
    shapes = await _tool_schemas()
    valid = {
        "echo": {"text": "hi"},
        "search": {"query": "q", "limit": 3, "kinds": ["a", "b"], "exact": True},
        "bounded": {"n": 5, "mode": "slow"},
    }
    for name, arguments in valid.items():
        accepts = compile_accepting(shapes[name])
        assert accepts is not None, shapes[name]
        assert accepts(arguments), (name, arguments)
        assert accepts({**arguments, "extra": 1}) == jsonschema.Draft202012Validator(shapes[name]).is_valid(
            {**arguments, "extra": 1}
        )
    assert compile_accepting(shapes["nested"]) is None  # jsonschema alone decides
    bounded = compile_accepting(shapes["bounded"])
    assert bounded is not None
    for wrong in ({"n": 0}, {"n": 5, "mode": "medium"}, {"n": "5"}, {"n": True}):
        assert not bounded(wrong)


async def test_the_validator_still_reports_what_the_fast_path_declines():
    shapes = await _tool_schemas()
    validator = SchemaValidator(shapes["bounded"])
    validator.check({"n": 3}, tool="bounded", server="s")
    validator.check({"n": 3.0}, tool="bounded", server="s")  # declined by the fast path, valid
    try:
        validator.check({"n": 0, "mode": "medium"}, tool="bounded", server="s")
    except Exception as exc:
        assert "minimum" in str(exc) and "medium" in str(exc)
    else:
        raise AssertionError("invalid arguments passed")
