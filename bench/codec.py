"""µs per JSON-RPC message decoded and encoded: our msgspec codec, the SDK's pydantic types,
and the stdlib ``json`` (the baseline), on the same three messages.

The messages: a ``tools/call`` request, its response (a ``CallToolResult`` with text, image
and resource-link blocks and structured content), and a ``tools/list`` result with 50 tools.
Per message and path, decode is UTF-8 JSON bytes -> objects, encode is objects -> UTF-8 JSON
bytes:

- json: ``json.loads`` / ``json.dumps`` (compact); plain dicts, nothing checked;
- msgspec: ``protocol.decode`` / ``protocol.encode``: the envelope checked and typed, the
  payload left as plain values (what the supervisor does at the edges it owns);
- pydantic envelope: ``mcp_types.jsonrpc_message_adapter.validate_json`` /
  ``model_dump_json``: the same work as ours, with the SDK's pydantic types;
- pydantic typed: the envelope plus the payload validated into its SDK type
  (``CallToolRequestParams``, ``CallToolResult``, ``ListToolsResult``) and dumped back, which
  is what the SDK does with every message it reads or writes.

Every path's decoded value is checked against ``json.loads`` first. The paths run
interleaved over several rounds, timed in short batches (the fastest batch wins), so the ratios hold on a noisy machine.
Ratios are to json (below 1: faster than json).

    python bench/codec.py [--n 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import mcp_types
import msgspec

import protocol

Codec = tuple[Callable[[bytes], Any], Callable[[Any], bytes]]


def tools_call_request() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 42,
        "method": "tools/call",
        "params": {
            "name": "search_nodes",
            "arguments": {"query": "text to image", "limit": 10, "mode": "fast"},
            "_meta": {"progressToken": "p-42", "session_id": "a1b2c3"},
        },
    }


def call_tool_response() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 42,
        "result": {
            "content": [
                {"type": "text", "text": "Found 3 workflows for 'text to image'."},
                {"type": "text", "text": "1. SDXL base\n2. SD 1.5 + LoRA\n3. Flux schnell"},
                {"type": "image", "data": base64.b64encode(bytes(range(256)) * 4).decode(), "mimeType": "image/png"},
                {"type": "resource_link", "uri": "workflow://sdxl-base", "name": "sdxl-base", "mimeType": "application/json"},
            ],
            "structuredContent": {"results": [{"id": i, "name": f"wf{i}", "score": 0.9 - i / 10} for i in range(3)]},
            "isError": False,
        },
    }


def tools_list_response(n: int = 50) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "description": "what to look for"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            "mode": {"enum": ["fast", "exact"]},
        },
        "required": ["query"],
        "additionalProperties": False,
    }
    tools = [
        {
            "name": f"tool_{i}",
            "description": f"Tool number {i}: searches the node library and returns matching entries.",
            "inputSchema": schema,
            "annotations": {"readOnlyHint": True, "idempotentHint": True},
        }
        for i in range(n)
    ]
    return {"jsonrpc": "2.0", "id": 7, "result": {"tools": tools}}


def json_codec() -> Codec:
    def enc(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    return json.loads, enc


def msgspec_codec() -> Codec:
    return protocol.decode, protocol.encode


def pydantic_envelope_codec() -> Codec:
    adapter = mcp_types.jsonrpc_message_adapter

    def dec(data: bytes) -> Any:
        return adapter.validate_json(data, by_name=False)

    def enc(msg: Any) -> bytes:
        return msg.model_dump_json(by_alias=True, exclude_unset=True).encode()

    return dec, enc


def pydantic_typed_codec(payload: type) -> Codec:
    """Envelope plus payload: ``payload`` validates the request's params or the result."""
    adapter = mcp_types.jsonrpc_message_adapter

    def dec(data: bytes) -> Any:
        msg = adapter.validate_json(data, by_name=False)
        body = msg.params if isinstance(msg, mcp_types.JSONRPCRequest) else msg.result
        return msg, payload.model_validate(body, by_name=False)

    def enc(decoded: Any) -> bytes:
        msg, model = decoded
        body = model.model_dump(by_alias=True, exclude_none=True, mode="json")
        if isinstance(msg, mcp_types.JSONRPCRequest):
            out = mcp_types.JSONRPCRequest(jsonrpc="2.0", id=msg.id, method=msg.method, params=body)
        else:
            out = mcp_types.JSONRPCResponse(jsonrpc="2.0", id=msg.id, result=body)
        return out.model_dump_json(by_alias=True, exclude_unset=True).encode()

    return dec, enc


MESSAGES: dict[str, tuple[Callable[[], dict[str, Any]], type]] = {
    "tools/call request": (tools_call_request, mcp_types.CallToolRequestParams),
    "CallToolResult response": (call_tool_response, mcp_types.CallToolResult),
    "tools/list result, 50 tools": (tools_list_response, mcp_types.ListToolsResult),
}
PATHS = ("json", "msgspec", "pydantic_envelope", "pydantic_typed")


def codecs_for(payload: type) -> dict[str, Codec]:
    return {
        "json": json_codec(),
        "msgspec": msgspec_codec(),
        "pydantic_envelope": pydantic_envelope_codec(),
        "pydantic_typed": pydantic_typed_codec(payload),
    }


def check(name: str, path: str, codec: Codec, wire: bytes, expected: dict[str, Any]) -> None:
    """The path reads the message as json does, and what it writes reads back the same."""
    dec, enc = codec
    decoded = dec(wire)
    if path == "msgspec":
        assert msgspec.to_builtins(decoded) == expected, (name, path)
    elif path == "pydantic_envelope":
        assert decoded.model_dump(by_alias=True, exclude_unset=True) == expected, (name, path)
    again = json.loads(enc(decoded))
    if path == "pydantic_typed":  # the SDK adds its defaults (resultType, ...): compare what we sent
        body = again.get("params", again.get("result"))
        sent = expected.get("params", expected.get("result"))
        assert {k: body[k] for k in sent} == sent, (name, path)
    else:
        assert again == expected, (name, path)


BATCH = 20  # calls per timed batch: short enough that most batches are not preempted


def time_per_call(fn: Callable[[Any], Any], arg: Any, n: int) -> float:
    """Seconds per call: the fastest of ``n // BATCH`` batches (a preempted batch is slow,
    never fast, so the minimum is the least disturbed figure)."""
    best = float("inf")
    for _ in range(max(1, n // BATCH)):
        t0 = time.perf_counter()
        for _ in range(BATCH):
            fn(arg)
        best = min(best, time.perf_counter() - t0)
    return best / BATCH


def measure(n: int, rounds: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for index, (name, (build, payload)) in enumerate(MESSAGES.items()):
        expected = build()
        wire = json.dumps(expected, separators=(",", ":")).encode()
        codecs = codecs_for(payload)
        for path, codec in codecs.items():
            check(name, path, codec, wire, expected)
        count = max(1, n // 10) if index == 2 else n  # the 50-tool list is ~10x the work
        best: dict[str, list[float]] = {f"{p}_{op}": [] for p in PATHS for op in ("decode", "encode")}
        for _ in range(rounds):
            for path, (dec, enc) in codecs.items():
                decoded = dec(wire)
                best[f"{path}_decode"].append(time_per_call(dec, wire, count))
                best[f"{path}_encode"].append(time_per_call(enc, decoded, count))
        figures[f"bytes@{index}"] = float(len(wire))
        for key, samples in best.items():
            figures[f"{key}@{index}"] = min(samples)
        for path in PATHS:
            both = figures[f"{path}_decode@{index}"] + figures[f"{path}_encode@{index}"]
            figures[f"{path}_roundtrip@{index}"] = both
        for path in PATHS:
            for op in ("decode", "encode", "roundtrip"):
                figures[f"{path}_{op}_ratio@{index}"] = figures[f"{path}_{op}@{index}"] / figures[f"json_{op}@{index}"]
    return figures


def run(n: int = 2000, rounds: int = 5) -> dict[str, float]:
    """Seconds per decode/encode/roundtrip and the ratios to json, per message.

    Keys are ``<path>_<op>@<i>`` and ``<path>_<op>_ratio@<i>``, with path in json, msgspec,
    pydantic_envelope, pydantic_typed; op in decode, encode, roundtrip; ``i`` the message's
    index in ``MESSAGES`` (``bytes@<i>`` is its size). Raises ``AssertionError`` when a path
    reads or writes a message differently from json.
    """
    return measure(n, rounds)


def report(figures: dict[str, float]) -> None:
    labels = {
        "json": "stdlib json (baseline)",
        "msgspec": "msgspec (protocol.decode/encode)",
        "pydantic_envelope": "pydantic envelope (mcp_types)",
        "pydantic_typed": "pydantic envelope + payload type",
    }
    for index, name in enumerate(MESSAGES):
        print(f"{name} ({int(figures[f'bytes@{index}'])} bytes), fastest batch")
        print(f"  {'':34} {'decode µs':>10} {'encode µs':>10} {'both µs':>9} {'x json':>7}")
        for path, label in labels.items():
            print(
                f"  {label:34} {figures[f'{path}_decode@{index}'] * 1e6:10.2f} {figures[f'{path}_encode@{index}'] * 1e6:10.2f}"
                f" {figures[f'{path}_roundtrip@{index}'] * 1e6:9.2f} {figures[f'{path}_roundtrip_ratio@{index}']:7.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="iterations per round (a tenth for the 50-tool list)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    report(run(args.n, args.rounds))


if __name__ == "__main__":
    main()
