"""MCP tool payloads: specs, annotations, call params, the copilot's ToolResult."""

from __future__ import annotations

import copy
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    INVALID_REQUEST,
    PARSE_ERROR,
    CallParams,
    ProtocolError,
    Request,
    ToolAnnotations,
    ToolResult,
    ToolSpec,
    decode,
    encode,
)

SETTINGS = settings(max_examples=200, deadline=None)

REALISTIC_TOOL = {
    "name": "queue_prompt",
    "title": "Queue a prompt",
    "description": "Queue a ComfyUI workflow and return its prompt id.",
    "inputSchema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "workflow": {"$ref": "#/$defs/Workflow"},
            "client_id": {"type": "string", "default": ""},
        },
        "required": ["workflow"],
        "additionalProperties": False,
        "$defs": {
            "Workflow": {
                "type": "object",
                "additionalProperties": {"$ref": "#/$defs/Node"},
            },
            "Node": {
                "type": "object",
                "properties": {"class_type": {"type": "string"}, "inputs": {"type": "object"}},
            },
        },
    },
    "outputSchema": {"type": "object", "properties": {"prompt_id": {"type": "string"}}},
    "annotations": {
        "title": "Queue prompt",
        "readOnlyHint": False,
        "destructiveHint": False,
        "idempotentHint": True,
        "openWorldHint": True,
    },
    "_meta": {"vendor/x": 1},
    "icons": [{"src": "https://example.invalid/i.png"}],
}


def test_tool_spec_from_realistic_mcp_dict():
    original = copy.deepcopy(REALISTIC_TOOL)
    spec = ToolSpec.from_dict(REALISTIC_TOOL, server="comfy", category="generation")
    assert REALISTIC_TOOL == original  # input untouched
    assert spec.name == "queue_prompt"
    assert spec.title == "Queue a prompt"
    assert spec.inputSchema == REALISTIC_TOOL["inputSchema"]  # $schema / $defs pass through
    assert spec.inputSchema["$defs"]["Workflow"]["additionalProperties"] == {"$ref": "#/$defs/Node"}
    assert spec.outputSchema == REALISTIC_TOOL["outputSchema"]
    assert spec.annotations == ToolAnnotations(
        title="Queue prompt", readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=True
    )
    assert spec.retry_safe
    assert (spec.server, spec.category) == ("comfy", "generation")
    # Back to the MCP wire: everything MCP we know, nothing of ours.
    wire = spec.to_dict()
    assert wire == REALISTIC_TOOL  # icons and _meta included: a gateway passes them on
    assert json.loads(encode(spec))["inputSchema"] == REALISTIC_TOOL["inputSchema"]


def test_tool_spec_minimal_and_defaults():
    spec = ToolSpec.from_dict({"name": "echo"})
    assert spec.inputSchema == {"type": "object"}
    assert spec.annotations is None and not spec.retry_safe
    assert spec.to_dict() == {"name": "echo", "inputSchema": {"type": "object"}}
    # Defaults are not shared between instances.
    spec.inputSchema["x"] = 1
    assert ToolSpec("other").inputSchema == {"type": "object"}


def test_tool_spec_ignores_wire_server_and_category():
    spec = ToolSpec.from_dict({"name": "echo", "server": "someone-else", "category": "admin"}, server="mine")
    assert spec.server == "mine" and spec.category is None


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"name": 3},
        {"name": "x", "inputSchema": None},
        {"name": "x", "inputSchema": "object"},
        {"name": "x", "annotations": {"readOnlyHint": "yes"}},
        [],
    ],
)
def test_tool_spec_from_bad_dict(bad):
    with pytest.raises(ProtocolError) as info:
        ToolSpec.from_dict(bad)
    assert info.value.code == INVALID_REQUEST


@pytest.mark.parametrize(
    ("hints", "safe"),
    [
        ({}, False),
        ({"readOnlyHint": True}, True),
        ({"idempotentHint": True}, True),
        ({"readOnlyHint": False, "idempotentHint": False}, False),
        ({"destructiveHint": False, "openWorldHint": False}, False),
        ({"readOnlyHint": None, "idempotentHint": True}, True),
    ],
)
def test_retry_safe(hints, safe):
    assert ToolAnnotations(**hints).retry_safe is safe


def test_annotations_omit_absent_hints():
    assert encode(ToolAnnotations(readOnlyHint=True)) == b'{"readOnlyHint":true}'


def test_call_params_wire_shape():
    assert encode(CallParams("echo")) == b'{"name":"echo","arguments":{}}'
    p = CallParams("echo", {"text": "hi"}, meta={"progressToken": 1})
    assert encode(p) == b'{"name":"echo","arguments":{"text":"hi"},"_meta":{"progressToken":1}}'
    assert msgspec.json.decode(encode(p), type=CallParams) == p
    assert msgspec.convert({"name": "echo"}, CallParams) == CallParams("echo")
    # Inside a request, as the connection actor sends it.
    req = Request(id=1, method="tools/call", params=msgspec.to_builtins(p))
    assert decode(encode(req)).params == {"name": "echo", "arguments": {"text": "hi"}, "_meta": {"progressToken": 1}}


def test_tool_result_json_shape():
    r = ToolResult("queue_prompt", True, {"prompt_id": "é"})
    assert r.ext == []
    s = r.to_json()
    assert isinstance(s, str)
    assert "é" in s  # not escaped: ensure_ascii=False semantics
    assert json.loads(s) == {
        "tool_name": "queue_prompt",
        "success": True,
        "result": {"prompt_id": "é"},
        "error": None,
        "ext": [],
    }
    assert ToolResult("t", False, ext=None).ext == []
    assert json.loads(ToolResult("t", False, ext=None).to_json())["ext"] == []


def test_tool_result_ext_absent_or_null_reads_as_empty_list():
    assert ToolResult.from_json('{"tool_name":"t","success":true}').ext == []
    assert ToolResult.from_json(b'{"tool_name":"t","success":true,"ext":null}').ext == []
    assert ToolResult.from_json('{"tool_name":"t","success":true,"unknown":1}') == ToolResult("t", True)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("", PARSE_ERROR),
        ("{", PARSE_ERROR),
        (b"\xff", PARSE_ERROR),
        ("[]", INVALID_REQUEST),
        ("{}", INVALID_REQUEST),
        ('{"tool_name":"t"}', INVALID_REQUEST),
        ('{"tool_name":"t","success":"yes"}', INVALID_REQUEST),
        ('{"tool_name":"t","success":true,"ext":{}}', INVALID_REQUEST),
        ('{"tool_name":"t","success":true,"ext":[1]}', INVALID_REQUEST),
    ],
)
def test_tool_result_refuses_bad_input(data, code):
    with pytest.raises(ProtocolError) as info:
        ToolResult.from_json(data)
    assert info.value.code == code


text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(text, c, max_size=4),
    max_leaves=20,
)
tool_results = st.builds(
    ToolResult,
    text,
    st.booleans(),
    json_values,
    st.none() | text,
    st.lists(st.dictionaries(text, json_values, max_size=3), max_size=3),
)


@SETTINGS
@given(tool_results)
def test_tool_result_round_trips(r):
    s = r.to_json()
    back = ToolResult.from_json(s)
    assert back == r
    assert back.to_json() == s
    assert ToolResult.from_json(s.encode()) == r


@SETTINGS
@given(st.binary(max_size=100) | st.text(max_size=100))
def test_tool_result_from_json_raises_only_protocol_error(data):
    try:
        ToolResult.from_json(data)
    except ProtocolError as err:
        assert err.code in (PARSE_ERROR, INVALID_REQUEST)
