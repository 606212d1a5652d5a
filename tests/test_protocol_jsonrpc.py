"""JSON-RPC envelopes: round trips, refusal of everything else, the failure taxonomy."""

from __future__ import annotations

import json
import pickle

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol
from protocol import (
    DEFAULT_MAX_SIZE,
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorObject,
    ErrorResponse,
    Failure,
    Notification,
    ProtocolError,
    Request,
    SuccessResponse,
    decode,
    encode,
    failure_from_error,
)
from protocol import _failures

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ------------------------------------------------------------------------------

text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=25,
)
json_objects = st.dictionaries(text, json_values, max_size=5)
params = st.just(msgspec.UNSET) | json_objects | st.lists(json_values, max_size=5)
ids = st.integers() | text

requests = st.builds(lambda i, m, p: Request(id=i, method=m, params=p), ids, text, params)
notifications = st.builds(lambda m, p: Notification(method=m, params=p), text, params)
successes = st.builds(lambda i, r: SuccessResponse(id=i, result=r), ids, json_values)
error_objects = st.builds(
    ErrorObject, st.integers(), text, st.just(msgspec.UNSET) | json_values
)
errors = st.builds(lambda i, e: ErrorResponse(id=i, error=e), ids | st.none(), error_objects)
messages = requests | notifications | successes | errors


def refused(data, code, **kwargs) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(data, **kwargs)
    assert info.value.code == code, info.value.message
    assert info.value.to_error().code == code
    return info.value


# -- round trips -----------------------------------------------------------------------------


@SETTINGS
@given(messages)
def test_every_valid_message_round_trips(m):
    wire = encode(m)
    back = decode(wire)
    assert type(back) is type(m)
    assert back == m
    assert encode(back) == wire


@SETTINGS
@given(messages)
def test_round_trip_from_str_bytearray_memoryview(m):
    wire = encode(m)
    for form in (wire.decode(), bytearray(wire), memoryview(wire)):
        assert decode(form) == m


def test_absent_members_stay_absent():
    assert encode(Request(id=1, method="tools/list")) == b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    assert encode(Notification(method="notifications/initialized")) == (
        b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
    )
    assert encode(ErrorResponse(id=None, error=ErrorObject(-32700, "bad"))) == (
        b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad"}}'
    )
    # A present null stays present.
    assert encode(SuccessResponse(id="a", result=None)) == b'{"jsonrpc":"2.0","id":"a","result":null}'
    assert encode(ErrorObject(1, "m", None)) == b'{"code":1,"message":"m","data":null}'


def test_classification():
    assert decode(b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}') == Request(
        id=7, method="tools/call", params={"name": "x"}
    )
    assert decode(b'{"jsonrpc":"2.0","method":"n","params":[1,2]}') == Notification(method="n", params=[1, 2])
    assert decode(b'{"jsonrpc":"2.0","id":"s","result":{"ok":true}}') == SuccessResponse(id="s", result={"ok": True})
    assert decode(b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x","data":[1]}}') == ErrorResponse(
        id=None, error=ErrorObject(-32700, "x", [1])
    )


def test_lenient_where_harmless():
    # Unknown members are ignored; params null reads as absent; whitespace is fine.
    m = decode(b' {"jsonrpc":"2.0","id":1,"method":"m","params":null,"extra":{"x":1e999}} \n')
    assert m == Request(id=1, method="m")
    # Big integers are kept exactly (msgspec decodes arbitrary-precision ints).
    assert decode(b'{"jsonrpc":"2.0","id":123456789012345678901234567890,"result":1}').id == (
        123456789012345678901234567890
    )


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b'{"jsonrpc":"1.0","id":1,"method":"m"}',
        b'{"jsonrpc":2.0,"id":1,"method":"m"}',
        b'{"id":1,"method":"m"}',
        b'{"jsonrpc":"2.0","id":1}',
        b'{"jsonrpc":"2.0","id":1,"params":{}}',
        b'{"jsonrpc":"2.0","id":1.0,"method":"m"}',
        b'{"jsonrpc":"2.0","id":1.5,"method":"m"}',
        b'{"jsonrpc":"2.0","id":true,"method":"m"}',
        b'{"jsonrpc":"2.0","id":false,"result":1}',
        b'{"jsonrpc":"2.0","id":{"a":1},"method":"m"}',
        b'{"jsonrpc":"2.0","id":[1],"method":"m"}',
        b'{"jsonrpc":"2.0","id":null,"method":"m"}',
        b'{"jsonrpc":"2.0","id":1,"method":5}',
        b'{"jsonrpc":"2.0","id":1,"method":"m","params":"x"}',
        b'{"jsonrpc":"2.0","id":1,"method":"m","params":3}',
        b'{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":"m"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"m","result":1}',
        b'{"jsonrpc":"2.0","result":1}',
        b'{"jsonrpc":"2.0","id":null,"result":1}',
        b'{"jsonrpc":"2.0","error":{"code":1,"message":"m"}}',
        b'{"jsonrpc":"2.0","id":1,"error":{"code":true,"message":"m"}}',
        b'{"jsonrpc":"2.0","id":1,"error":{"code":1}}',
        b'{"jsonrpc":"2.0","id":1,"error":"boom"}',
        b"[]",
        b'[{"jsonrpc":"2.0","id":1,"method":"m"}]',
        b"1",
        b'"x"',
        b"null",
        b"true",
    ],
)
def test_invalid_envelopes_are_invalid_requests(data):
    refused(data, INVALID_REQUEST)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"{",
        b'{"jsonrpc":"2.0",}',
        b"{'a':1}",
        b'{"jsonrpc":"2.0","id":1,"method":"m"} x',
        b'{"jsonrpc":"2.0","id":1,"method":"\xff\xfe"}',
        b"\xff",
        b'{"jsonrpc":"2.0","id":1,"method":"m","params":[NaN]}',
        b'{"jsonrpc":"2.0","id":1,"result":1e400}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"jsonrpc":"2.0","id":1,"result":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        '{"jsonrpc":"2.0","id":1,"method":"\ud800"}',
        b'{"jsonrpc":"2.0","id":1,"method":"\\ud800"}',
        b'{"jsonrpc":"2.0","id":1,"method":"m","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
)
def test_invalid_json_is_a_parse_error(data):
    err = refused(data, PARSE_ERROR)
    assert err.id is None


def test_specific_messages():
    assert "batch" in refused(b'[{"jsonrpc":"2.0","id":1,"method":"m"}]', INVALID_REQUEST).message
    assert "UTF-8" in refused(b'{"jsonrpc":"2.0","id":1,"method":"\xc3\x28"}', PARSE_ERROR).message
    assert "jsonrpc" in refused(b'{"id":1,"method":"m"}', INVALID_REQUEST).message
    assert "both a result and an error" in refused(
        b'{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":"m"}}', INVALID_REQUEST
    ).message


def test_id_is_recovered_when_possible():
    assert refused(b'{"jsonrpc":"1.0","id":4,"method":"m"}', INVALID_REQUEST).id == 4
    assert refused(b'{"jsonrpc":"2.0","id":"k","params":{}}', INVALID_REQUEST).id == "k"
    assert refused(b'{"jsonrpc":"2.0","id":"k","method":"m","params":1}', INVALID_REQUEST).id == "k"
    assert refused(b'{"jsonrpc":"2.0","id":true,"method":"m"}', INVALID_REQUEST).id is None
    assert refused(b'{"jsonrpc":"2.0","id":1.0,"method":"m"}', INVALID_REQUEST).id is None
    err = refused(b'{"jsonrpc":"1.0","id":4,"method":"m"}', INVALID_REQUEST)
    answer = err.to_response()
    assert answer.id == 4 and answer.error.code == INVALID_REQUEST
    assert decode(encode(answer)) == answer


def test_protocol_error_pickles():
    err = ProtocolError(INVALID_REQUEST, "nope", id=3, data={"x": 1})
    back = pickle.loads(pickle.dumps(err))
    assert (back.code, back.message, back.id, back.data) == (INVALID_REQUEST, "nope", 3, {"x": 1})


# -- size limit ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", [bytes, bytearray, memoryview, lambda b: b.decode()])
def test_oversized_input_is_refused_before_parsing(form):
    wire = encode(Request(id=1, method="m", params={"blob": "x" * 100}))
    limit = len(wire) - 1
    err = refused(form(wire), PARSE_ERROR, max_size=limit)
    assert f"{len(wire)} bytes" in err.message and f"{limit}-byte limit" in err.message
    assert decode(form(wire), max_size=len(wire)) == decode(wire)


def test_str_size_counts_utf8_bytes():
    wire = encode(Request(id=1, method="m", params=["é" * 50])).decode()
    nbytes = len(wire.encode())
    assert nbytes > len(wire)
    refused(wire, PARSE_ERROR, max_size=nbytes - 1)
    assert decode(wire, max_size=nbytes).method == "m"


def test_default_limit_is_4_mib():
    assert DEFAULT_MAX_SIZE == 4 * 1024 * 1024
    head = b'{"jsonrpc":"2.0","id":1,"method":"m","params":["'
    tail = b'"]}'
    fits = head + b"x" * (DEFAULT_MAX_SIZE - len(head) - len(tail)) + tail
    assert len(fits) == DEFAULT_MAX_SIZE
    assert decode(fits).method == "m"
    over = head + b"x" * (DEFAULT_MAX_SIZE + 1 - len(head) - len(tail)) + tail
    err = refused(over, PARSE_ERROR)
    assert err.message == (
        f"Parse error: message of {DEFAULT_MAX_SIZE + 1} bytes exceeds the {DEFAULT_MAX_SIZE}-byte limit"
    )


# -- nothing but ProtocolError ---------------------------------------------------------------


def _decode_or_protocol_error(data):
    try:
        return decode(data)
    except ProtocolError as err:
        assert err.code in (PARSE_ERROR, INVALID_REQUEST)
        assert isinstance(err.message, str) and err.message
        assert err.id is None or (type(err.id) in (int, str))
        return err


@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_else(data):
    _decode_or_protocol_error(data)


@SETTINGS
@given(st.text(alphabet=st.characters() | st.characters(categories=["Cs"]), max_size=200))
def test_arbitrary_text_never_raises_anything_else(data):
    # Lone surrogates in a str must be refused, not crash.
    _decode_or_protocol_error(data)


@SETTINGS
@given(messages, st.binary(min_size=1, max_size=8))
def test_garbage_after_a_bad_member_is_a_parse_error(m, junk):
    # The typed decoder stops at the first type error; the syntax error after it still wins.
    wire = encode(m)
    broken = wire[:-1] + b',"id":1.5,}' + junk  # the trailing comma is never valid
    refused(broken, PARSE_ERROR)


any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=20,
)
envelope_like = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.just("2.0") | any_json,
        "id": st.integers() | st.text(max_size=5) | any_json,
        "method": st.text(max_size=10) | any_json,
        "params": json_objects | any_json,
        "result": any_json,
        "error": st.fixed_dictionaries({"code": st.integers(), "message": st.text(max_size=5)}) | any_json,
    },
)


@SETTINGS
@given(any_json | envelope_like)
def test_arbitrary_json_never_raises_anything_else(value):
    data = json.dumps(value).encode("utf-8", "surrogatepass")
    out = _decode_or_protocol_error(data)
    if isinstance(out, ProtocolError):
        return
    # What decodes is a genuine envelope that round-trips.
    assert isinstance(value, dict) and value.get("jsonrpc") == "2.0"
    assert isinstance(out, (Request, Notification, SuccessResponse, ErrorResponse))
    assert decode(encode(out)) == out
    if "id" in value:
        assert out.id == value["id"] and type(out.id) is type(value["id"])


@SETTINGS
@given(messages)
def test_valid_looking_stdlib_json_decodes(m):
    # The same message written by the stdlib (spaces, different key order) decodes the same.
    value = msgspec.to_builtins(m)
    data = json.dumps(dict(reversed(list(value.items()))), ensure_ascii=True, indent=1)
    assert decode(data) == m


# -- failure taxonomy ------------------------------------------------------------------------

FAILURES = [getattr(_failures, name) for name in _failures.__all__ if name not in ("Failure", "failure_from_error")]


def test_failure_codes_are_distinct_and_in_the_server_range():
    codes = [cls.code for cls in FAILURES]
    assert len(set(codes)) == len(codes)
    assert all(-32099 <= c <= -32000 for c in codes)
    assert len({cls.kind for cls in FAILURES}) == len(FAILURES)
    assert all(issubclass(cls, Failure) for cls in FAILURES)
    assert set(_failures.__all__) <= set(protocol.__all__)


@pytest.mark.parametrize("cls", FAILURES)
def test_failure_round_trips_through_the_wire(cls):
    f = cls("it broke", server="echo", retry_at=1.5)
    err = f.to_error()
    assert err.code == cls.code and err.data["kind"] == cls.kind
    wire = encode(ErrorResponse(id=9, error=err))
    back = failure_from_error(decode(wire).error)
    assert type(back) is cls
    assert back.message == "it broke"
    assert back.data == {"server": "echo", "retry_at": 1.5}
    assert str(back) == "it broke"


@pytest.mark.parametrize(
    "error",
    [
        ErrorObject(-32601, "Method not found"),
        ErrorObject(-32001, "Request timed out"),  # the mcp SDK's REQUEST_TIMEOUT
        ErrorObject(-32001, "x", {"kind": "SomethingElse"}),
        ErrorObject(-32002, "x", {"kind": "UnknownTool"}),  # kind and code disagree
        ErrorObject(-32001, "x", {"kind": ["UnknownTool"]}),
        ErrorObject(-32001, "x", "UnknownTool"),
        ErrorObject(-32000, "x", {"kind": "Failure"}),
    ],
)
def test_foreign_errors_are_not_failures(error):
    assert failure_from_error(error) is None


@SETTINGS
@given(error_objects)
def test_failure_from_error_never_raises(error):
    f = failure_from_error(error)
    assert f is None or isinstance(f, Failure)
