"""What a server asks mid-call, embedded: ``Supervisor(on_input_request=...)`` answers it,
and without a handler every question gets a refusal that says what was asked.

The server is the fidelity fixture (``tests/servers/everything.py``), a real subprocess; its
``ask_*`` tools need an answer from the client before they can finish. The daemon's relay of
the same questions to its own clients is in ``test_gateway_fidelity.py``.
"""

from __future__ import annotations

import json

import mcp_types
import trio
from mcp import MCPError

from supervisor import Supervisor

from conftest import marker_of, procs_with_marker, server_spec, wait_until


def everything():
    return server_spec("everything", "everything.py")


def text(result) -> str:
    return "".join(block.text for block in result.content if block.type == "text")


async def test_the_hosts_handler_answers_elicitation_sampling_and_roots():
    asked: list[tuple[str, str]] = []

    async def on_input_request(server: str, request: mcp_types.InputRequest):
        asked.append((server, request.method))
        if isinstance(request, mcp_types.ElicitRequest):
            return mcp_types.ElicitResult(action="accept", content={"colour": "teal", "count": 7, "sure": True})
        if isinstance(request, mcp_types.CreateMessageRequest):
            return mcp_types.CreateMessageResult(
                role="assistant", content=mcp_types.TextContent(type="text", text="the host's model"), model="host"
            )
        return mcp_types.ListRootsResult(roots=[mcp_types.Root(uri="file:///work", name="work")])

    spec = everything()
    with trio.fail_after(40):
        async with Supervisor([spec], on_input_request=on_input_request) as sup:
            elicited = await sup.call_tool("ask_elicitation", {"question": "Favourite colour?"})
            assert text(elicited).startswith("accept "), text(elicited)
            assert json.loads(text(elicited).removeprefix("accept ")) == {"colour": "teal", "count": 7, "sure": True}
            sampled = json.loads(text(await sup.call_tool("ask_sampling", {"prompt": "hi"})))
            assert sampled["content"]["text"] == "the host's model"
            rooted = json.loads(text(await sup.call_tool("ask_roots", {})))
            assert rooted["roots"] == [{"uri": "file:///work", "name": "work"}]
    assert asked == [
        ("everything", "elicitation/create"),
        ("everything", "sampling/createMessage"),
        ("everything", "roots/list"),
    ]
    await wait_until(lambda: not procs_with_marker(marker_of(spec)), timeout=10, what="no orphans")


async def refusal_of(sup: Supervisor) -> str:
    """The refusal text the server passed on for an elicitation nobody answered."""
    try:
        result = await sup.call_tool("ask_elicitation", {"question": "Favourite colour?"})
    except MCPError as exc:  # the server may pass the refusal on as its own JSON-RPC error
        return exc.error.message
    assert result.is_error, f"an unanswered elicitation cannot succeed: {result}"
    return text(result)


async def test_without_a_handler_the_question_is_declined_saying_what_was_asked():
    with trio.fail_after(40):
        async with Supervisor([everything()]) as sup:
            message = await refusal_of(sup)
    assert "elicitation" in message and "Favourite colour?" in message, message
    assert "on_input_request" in message, message


async def test_a_handler_that_raises_is_answered_for_with_the_exception_named():
    async def broken(server: str, request: mcp_types.InputRequest):
        raise RuntimeError("the host's UI is closed")

    with trio.fail_after(40):
        async with Supervisor([everything()], on_input_request=broken) as sup:
            message = await refusal_of(sup)
            assert await refusal_of(sup) == message, "the server survives a refusal and asks again"
    assert "the host's UI is closed" in message and "RuntimeError" in message, message


async def test_a_handler_that_returns_no_answer_is_answered_for_naming_what_it_returned():
    """The host's handler returns what answers no question (a dict that is no
    ``ElicitResult``, say). The SDK failed to build the next request with it, and the call
    failed ``InvalidResult``, "server ... answered with no valid result", blaming the server
    and counting against it. Now the server gets an error naming what the handler returned,
    and the call gets the tool's answer to that; a dict that is a valid answer is taken."""

    async def sloppy(server: str, request: mcp_types.InputRequest):
        if isinstance(request, mcp_types.ElicitRequest):
            return {"not": "an ElicitResult"}
        return {"roots": [{"uri": "file:///work", "name": "work"}]}

    with trio.fail_after(40):
        async with Supervisor([everything()], on_input_request=sloppy) as sup:
            message = await refusal_of(sup)
            assert "on_input_request returned" in message and "ElicitResult" in message, message
            rooted = json.loads(text(await sup.call_tool("ask_roots", {})))
            assert rooted["roots"] == [{"uri": "file:///work", "name": "work"}]
            assert "InvalidResult" not in (await sup.metrics_snapshot()).tool("everything", "ask_elicitation").failures


async def test_an_answer_that_cannot_be_sent_is_answered_for_and_the_connection_lives_on():
    """The host's sampling answer holds a lone surrogate (half an emoji from a streaming
    model): the SDK's writer failed on it, which ended the connection mid-call. The server
    now gets an error saying why, and the connection serves on."""

    async def half_emoji(server: str, request: mcp_types.InputRequest):
        return mcp_types.CreateMessageResult(
            role="assistant", content=mcp_types.TextContent(type="text", text="cut: \ud83d"), model="host"
        )

    with trio.fail_after(40):
        async with Supervisor([everything()], on_input_request=half_emoji) as sup:
            try:
                result = await sup.call_tool("ask_sampling", {"prompt": "hi"})
                message = text(result)
                assert result.is_error, message
            except MCPError as exc:  # the server may pass the refusal on as its own JSON-RPC error
                message = exc.error.message
            assert "cannot be sent as JSON" in message and "surrogates not allowed" in message, message
            incarnation = sup.link("everything").conn
            assert text(await sup.call_tool("progress_steps", {"steps": 1})) is not None
            assert sup.link("everything").conn is incarnation and incarnation is not None  # the same connection


async def test_a_handler_that_never_answers_is_answered_for_at_the_servers_timeout():
    """The question is bounded by the server's ``timeout`` (here 1 s), not by the handler:
    the server gets an error naming the question, the call (allowed 20 s) gets the tool's
    answer to that, and the handler is cancelled."""
    cancelled = trio.Event()

    async def never(server: str, request: mcp_types.InputRequest):
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    spec = server_spec("everything", "everything.py", timeout=1.0)
    with trio.fail_after(40):
        async with Supervisor([spec], on_input_request=never) as sup:
            try:
                result = await sup.call_tool("ask_elicitation", {"question": "Favourite colour?"}, timeout=20)
                message = text(result)
                assert result.is_error, message
            except MCPError as exc:
                message = exc.error.message
            assert cancelled.is_set()
    assert "no answer to elicitation ('Favourite colour?') within 1 s" in message, message


def test_embedded_the_hosts_asyncio_handler_answers_in_the_hosts_context():
    import asyncio
    import contextvars

    from supervisor import embed
    from test_embed import run_asyncio

    chat = contextvars.ContextVar("chat", default=None)
    seen: list[tuple[str, str, object]] = []

    async def on_input_request(server: str, request: mcp_types.InputRequest):
        asyncio.get_running_loop()  # an asyncio task on the host loop
        seen.append((server, request.method, chat.get()))
        await asyncio.sleep(0)
        return mcp_types.ElicitResult(action="accept", content={"colour": "amber"})

    async def main() -> str:
        chat.set("chat-42")  # the host's context at embed time is the handler's
        async with embed([everything()], on_input_request=on_input_request) as sup:
            return text(await sup.call_tool("ask_elicitation", {"question": "Colour?"}))

    answered = run_asyncio(main, timeout=40)
    assert answered.startswith("accept ") and json.loads(answered.removeprefix("accept "))["colour"] == "amber"
    assert seen == [("everything", "elicitation/create", "chat-42")]
