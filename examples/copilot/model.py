"""A scripted "LLM": an ``agents`` Model that plays a script instead of calling a model API.

There is no network here, so the copilot's two agents run on ``ScriptedModel``: each model
turn, the script reads the conversation so far (the user's message, the outputs of the tool
calls made so far, the tools on offer) and answers with tool calls or with the final text,
exactly as an LLM answers through the Responses API. The SDK cannot tell the difference:
tool calls, handoffs and streaming go through its ordinary code paths.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

__all__ = ["ScriptedModel", "Script", "TurnHook", "call", "copilot_script", "rewriter_script"]

#: ``script(message, outputs, offered)``: tool calls to make, or the final text. ``outputs``
#: maps each tool called so far to its last output (text), ``offered`` the tool names on offer.
Script = Callable[[str, dict[str, str], list[str]], "list[ResponseFunctionToolCall] | str"]

#: ``hook(model_name, turn)``, awaited before each model turn (turn counts from 1).
TurnHook = Callable[[str, int], Awaitable[None]]


class ScriptedModel(Model):
    """An ``agents`` Model (openai-agents 0.24's ``Model`` interface) that plays ``script``.

    ``before_turn``, if given, is awaited before each turn: a test can act *during* a run
    (kill a server between two model turns, say) at a point the run really reaches.
    """

    def __init__(self, script: Script, *, name: str = "scripted", before_turn: TurnHook | None = None) -> None:
        self.script = script
        self.name = name
        self.before_turn = before_turn
        self.turns = 0

    async def _respond(self, input: str | list[Any], tools: list[Any], handoffs: list[Any]) -> list[Any]:
        self.turns += 1
        if self.before_turn is not None:
            await self.before_turn(self.name, self.turns)
        items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        message = next((str(i.get("content")) for i in items if isinstance(i, dict) and i.get("role") == "user"), "")
        names = {i["call_id"]: i["name"] for i in items if isinstance(i, dict) and i.get("type") == "function_call"}
        outputs = {
            names.get(i["call_id"], "?"): output_text(i["output"])
            for i in items
            if isinstance(i, dict) and i.get("type") == "function_call_output"
        }
        offered = [t.name for t in tools] + [h.tool_name for h in handoffs]
        answer = self.script(message, outputs, offered)
        if isinstance(answer, str):
            text = ResponseOutputText(type="output_text", text=answer, annotations=[])
            return [ResponseOutputMessage(type="message", id="msg", role="assistant", status="completed", content=[text])]
        return answer

    async def get_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, **_: Any) -> ModelResponse:  # type: ignore[no-untyped-def, override]
        return ModelResponse(output=await self._respond(input, tools, handoffs), usage=Usage(), response_id=None)

    async def stream_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs, tracing, **_: Any) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def, override]
        response = Response(
            id="scripted",
            created_at=0,
            model="scripted",
            object="response",
            output=await self._respond(input, tools, handoffs),
            parallel_tool_calls=True,
            tool_choice="auto",
            tools=[],
        )
        yield ResponseCompletedEvent(type="response.completed", sequence_number=0, response=response)


_call_ids = itertools.count(1)


def call(name: str, arguments: dict[str, Any]) -> ResponseFunctionToolCall:
    """A tool call, as the model asks for it (each with its own call id)."""
    n = next(_call_ids)
    return ResponseFunctionToolCall(
        type="function_call", id=f"fc_{n}", call_id=f"call_{n}", name=name, arguments=json.dumps(arguments), status="completed"
    )


def output_text(output: Any) -> str:
    """A tool output as text (the SDK may hand over one content part, or a list of them)."""
    if isinstance(output, dict):
        output = [output]
    if isinstance(output, list):
        return "".join(part.get("text", "") for part in output if isinstance(part, dict))
    return str(output)


def json_or(text: str, default: Any) -> Any:
    """``text`` as JSON, or ``default``; a tool's list result comes as ``{"result": [...]}``."""
    try:
        value = json.loads(text)
    except ValueError:
        return default
    return value.get("result", value) if isinstance(value, dict) and set(value) == {"result"} else value


def failed(output: str | None) -> bool:
    """Whether a tool output is the seed's failure shape (``{"success": false, ...}``)."""
    value = json_or(output or "", None)
    return isinstance(value, dict) and value.get("success") is False


# -- the scripts of the copilot's two agents ----------------------------------------------------


def copilot_script(message: str, outputs: dict[str, str], tools: list[str]) -> list[ResponseFunctionToolCall] | str:
    """The main agent: look things up on both servers, note a preference, then hand off.

    ``preview ...`` messages ask the backend for a (slow) preview render instead.
    """
    if message.startswith("preview"):
        if "render_preview" not in outputs:
            return [call("render_preview", {"seconds": 30})]
        return f"Preview: {outputs['render_preview']}"
    if not outputs:
        return [
            call("recall_workflow", {"query": message}),  # the backend
            call("search__search_nodes", {"query": "loader"}),  # the search server
            call("session_info", {}),  # the backend: which session is this?
            call("remember_preference", {"preference": "square images"}),  # a local tool
        ]
    if "search__get_node_info" not in outputs:
        workflows = json_or(outputs.get("recall_workflow", ""), [])
        first = workflows[0]["nodes"][0] if isinstance(workflows, list) and workflows else "KSampler"
        return [call("search__get_node_info", {"name": first})]  # a second look-up on the search server
    return [call(next(t for t in tools if t.startswith("transfer_to_")), {})]


def rewriter_script(message: str, outputs: dict[str, str], tools: list[str]) -> list[ResponseFunctionToolCall] | str:
    """The workflow-rewrite agent: validate the recalled workflow, then answer."""
    workflows = json_or(outputs.get("recall_workflow", ""), [])
    nodes = workflows[0]["nodes"] if isinstance(workflows, list) and workflows else []
    if "validate_workflow" not in outputs:
        return [call("validate_workflow", {"nodes": nodes})]
    verdict = json_or(outputs["validate_workflow"], {})
    info = outputs.get("search__get_node_info")
    details = "node details unavailable (search server down)" if failed(info) else "node details checked"
    return f"Workflow {' -> '.join(nodes) or '(none found)'}; valid: {verdict.get('valid')}; {details}"
