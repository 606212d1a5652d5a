"""The echo server over streamable HTTP (or SSE with ``--sse``), served by hypercorn under trio.

Binds 127.0.0.1 on ``--port`` (default 0: the OS picks a free port) and prints exactly one
line ``LISTENING <port>`` to stdout once the socket is bound and the app's lifespan has
started, so a test can read the port. Endpoints: ``http://127.0.0.1:<port>/mcp``
(streamable HTTP) or ``http://127.0.0.1:<port>/sse`` (SSE, with ``--sse``).
Host/Origin checks accept 127.0.0.1 and localhost on any port.
Runs until killed (SIGTERM/SIGINT) or, with ``--exit-on-stdin-close``, until stdin closes.

``--handshake-only`` makes it a server from before 2026-07-28: it does not serve
``server/discover``, so a client in ``auto`` mode falls back to the ``initialize`` handshake
and the server keeps the session (``Mcp-Session-Id``) in memory; a restarted one answers
the old session's requests with 404. Its tool ``forget_sessions`` drops every session
there and then, as an expiry would (the server keeps running). ``--list-changed`` adds
``list_changed.py``'s tools (``add_tool``, ``announce``, ``lists_served``). ``--blob`` adds
``blob(kib)``, which answers with a text of ``kib`` KiB. ``--gzip`` compresses every answer
but an event stream (starlette's ``GZipMiddleware``) when the client accepts it.

``--http-errors`` stands for a proxy in front of the server: its tool
``fail_next(status, count, retry_after, method)`` makes the next ``count`` POSTs of a
``method`` request (``tools/call`` by default, other than ``fail_next`` itself) answer HTTP
``status`` with a plain-text body, as a gateway does (or, with ``content_type``, a body that
is no JSON-RPC under that type), and never reach the server;
``calls_served`` says how many did reach it, ``refusals_pending`` how many are still to be
refused; ``break_next(how, count)`` makes the answers to the next ``count`` tools/call POSTs
break off (``cut-short``: a JSON body shorter than its Content-Length, then the connection
closed; ``sse-empty``: an event stream that ends with no event; ``wrong-id``: a JSON result
for another request id; ``sse-retry=<ms>``: an event stream that gives an event id, asks for
``<ms>`` ms of wait before it is resumed, and ends; ``no-answer``: no HTTP answer at all, which
over SSE holds up the POST), never reaching the server; ``hold_next(method, count)`` gives
the next ``count`` POSTs of a ``method`` message (a notification too) no HTTP answer at all;
``end_gets(count)`` answers the next ``count`` GETs (the server's event stream) with a
stream that asks for no wait (``retry: 0``) and ends at once, and says how many GETs came. ``--refuse-first N`` (with ``--http-errors``) answers the first ``N`` POSTs of any
kind, the handshake's included, with 503.

    python tests/servers/http_echo.py [--port N] [--sse] [--json-response] [--stateless]
        [--handshake-only] [--list-changed] [--http-errors [--refuse-first N]] [--exit-on-stdin-close]
        [--blob] [--gzip] [--name NAME]
"""

import argparse
import json
import sys

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from mcp.server.mcpserver import MCPServer
from mcp.server.sse import SseServerTransport
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Mount, Route

from _common import base_parser, make_server

SECURITY = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
)


class _SseEndpoint:
    """The GET /sse endpoint as a raw ASGI app.

    MCPServer.sse_app() (mcp 2.3) returns a Response after the event stream has already
    answered, which hypercorn logs as an UnexpectedMessageError on every disconnect.
    """

    def __init__(self, mcp: MCPServer, transport: SseServerTransport) -> None:
        self.lowlevel = mcp._lowlevel_server  # pyright: ignore[reportPrivateUsage]
        self.transport = transport

    async def __call__(self, scope, receive, send) -> None:
        async with self.transport.connect_sse(scope, receive, send) as (read_stream, write_stream):
            await self.lowlevel.run(read_stream, write_stream, self.lowlevel.create_initialization_options())


def sse_app(mcp: MCPServer) -> Starlette:
    transport = SseServerTransport("/messages/", security_settings=SECURITY)
    return Starlette(
        routes=[
            Route("/sse", endpoint=_SseEndpoint(mcp, transport), methods=["GET"]),
            Mount("/messages/", app=transport.handle_post_message),
        ]
    )


class _Gateway:
    """ASGI middleware: answers the next ``count`` POSTs of a ``method`` request with ``status`` itself."""

    def __init__(self, app, refuse_first: int) -> None:
        self.app = app
        self.status = 503
        self.retry_after: str | None = None
        self.count = 0
        self.method = b'"tools/call"'
        self.served = 0
        self.refuse_first = refuse_first
        self.content_type = "text/plain"
        self.breaks: list[str] = []  # how the next tools/call POSTs' answers break (`break_next`)
        self.holds: list[bytes] = []  # the methods whose next POST gets no answer (`hold_next`)
        self.ending_gets = 0  # GETs still to end at once, asking for no wait (`end_gets`)
        self.gets = 0  # GETs seen

    async def break_answer(self, how: str, body: bytes, receive, send) -> None:
        """An answer that breaks off: ``cut-short`` (a JSON body shorter than its
        Content-Length, the connection then closed), ``sse-empty`` (an event stream that
        ends with no event), ``wrong-id`` (a whole JSON-RPC result, as JSON, for another
        request id than the one asked), ``sse-retry=<ms>`` (an event stream whose one event,
        with no data, gives an event id and asks for ``<ms>`` ms of wait before it is
        resumed, then ends), ``no-answer`` (no HTTP answer at all, until the client goes)."""
        if how == "wrong-id":
            asked = json.loads(body)["id"]
            other = asked + 1000 if isinstance(asked, int) else f"not-{asked}"
            result = {"content": [{"type": "text", "text": "an answer to another request"}], "isError": False}
            text = json.dumps({"jsonrpc": "2.0", "id": other, "result": result}).encode()
            head = [(b"content-type", b"application/json"), (b"content-length", str(len(text)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await send({"type": "http.response.body", "body": text})
            return
        if how.startswith("sse-retry="):
            event = b"id: resume-1\nretry: " + how.removeprefix("sse-retry=").encode() + b"\ndata: \n\n"
            head = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await send({"type": "http.response.body", "body": event})
            return
        if how == "no-answer":
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        if how == "cut-short":
            head = [(b"content-type", b"application/json"), (b"content-length", b"500")]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await send({"type": "http.response.body", "body": b'{"jsonrpc": "2.0", "id"', "more_body": True})
            raise ConnectionAbortedError("the answer is cut short here")  # the server closes the connection
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b""})

    async def refuse(self, send) -> None:
        text = f"upstream answered {self.status}".encode()
        kind = self.content_type.encode()
        if self.content_type == "text/event-stream":
            text = b"event: message\ndata: " + text + b"\n\n"
        headers = [(b"content-type", kind), (b"content-length", str(len(text)).encode())]
        if self.retry_after is not None:
            headers.append((b"retry-after", self.retry_after.encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": text})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            self.gets += 1
            if self.ending_gets > 0:
                self.ending_gets -= 1
                head = [(b"content-type", b"text/event-stream")]
                await send({"type": "http.response.start", "status": 200, "headers": head})
                await send({"type": "http.response.body", "body": b"id: 1\nretry: 0\ndata: \n\n"})
                return
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if self.refuse_first > 0:
            self.refuse_first -= 1
            await self.refuse(send)
            return
        ours = any(
            f'"{tool}"'.encode() in body
            for tool in ("fail_next", "calls_served", "refusals_pending", "break_next", "end_gets", "hold_next")
        )
        held = next((method for method in self.holds if method in body), None)
        if held is not None and not ours:
            self.holds.remove(held)
            await self.break_answer("no-answer", body, receive, send)
            return
        if self.breaks and b'"tools/call"' in body and not ours:
            await self.break_answer(self.breaks.pop(0), body, receive, send)
            return
        if self.count > 0 and self.method in body and not ours:
            self.count -= 1
            await self.refuse(send)
            return
        if b'"tools/call"' in body and not ours:
            self.served += 1
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def main_async(args) -> None:
    mcp = make_server(args.name or "http_echo")
    if args.list_changed:
        import list_changed

        list_changed.register(mcp)
    if args.blob:

        @mcp.tool()
        def blob(kib: int) -> str:
            """A text of `kib` KiB."""
            return "x" * (kib * 1024)

    if args.handshake_only:  # no public switch for this in mcp 2.3
        mcp._lowlevel_server._request_handlers.pop("server/discover")  # pyright: ignore[reportPrivateUsage]

        @mcp.tool()
        def forget_sessions() -> str:
            """Drop every session, as an expiry would."""
            mcp.session_manager._server_instances.clear()  # pyright: ignore[reportPrivateUsage]
            return "forgotten"
    if args.sse:
        app = sse_app(mcp)
    else:
        app = mcp.streamable_http_app(
            json_response=args.json_response, stateless_http=args.stateless, transport_security=SECURITY
        )
    if args.gzip:
        app = GZipMiddleware(app, minimum_size=1024)
    if args.http_errors:
        gateway = app = _Gateway(app, args.refuse_first)

        @mcp.tool()
        def fail_next(
            status: int, count: int = 1, retry_after: str | None = None, method: str = "tools/call",
            content_type: str = "text/plain",
        ) -> str:
            """Answer the next ``count`` POSTs of a ``method`` request with HTTP ``status``
            (and a ``Retry-After: <retry_after>`` header) and a body that is no JSON-RPC,
            whatever ``content_type`` says (an event stream: one event of it)."""
            gateway.status, gateway.count, gateway.retry_after = status, count, retry_after
            gateway.content_type = content_type
            gateway.method = f'"{method}"'.encode()
            return f"the next {count} {method} requests get HTTP {status}"

        @mcp.tool()
        def break_next(how: str, count: int = 1) -> str:
            """The answers to the next ``count`` tools/call POSTs break off ``how``:
            ``cut-short``, ``sse-empty``, ``wrong-id``, ``sse-retry=<ms>`` or ``no-answer``
            (see `_Gateway.break_answer`)."""
            gateway.breaks += [how] * count
            return f"the next {count} tools/call answers break off ({how})"

        @mcp.tool()
        def hold_next(method: str, count: int = 1) -> str:
            """The next ``count`` POSTs of a ``method`` message (a notification too, say
            ``notifications/cancelled``) get no HTTP answer at all, until the client goes."""
            gateway.holds += [f'"{method}"'.encode()] * count
            return f"the next {count} {method} POSTs get no answer"

        @mcp.tool()
        def end_gets(count: int) -> int:
            """Answer the next ``count`` GETs (the server's event stream) with a stream that
            asks for no wait before it is opened again (``retry: 0``) and ends at once;
            returns how many GETs came so far."""
            gateway.ending_gets = count
            return gateway.gets

        @mcp.tool()
        def refusals_pending() -> int:
            """How many of the POSTs ``fail_next`` asked for are still to be refused."""
            return gateway.count

        @mcp.tool()
        def calls_served() -> int:
            """How many tools/call POSTs (besides these two tools) reached the server."""
            return gateway.served

    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config)
        port = int(binds[0].rsplit(":", 1)[1])
        sys.stdout.write(f"LISTENING {port}\n")
        sys.stdout.flush()
        if args.exit_on_stdin_close:
            await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()


def build_parser(description: str | None) -> argparse.ArgumentParser:
    """The flags above (``http_headers.py`` takes the same)."""
    parser = base_parser(description)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sse", action="store_true", help="serve the SSE transport instead of streamable HTTP")
    parser.add_argument("--json-response", action="store_true")
    parser.add_argument("--stateless", action="store_true")
    parser.add_argument("--handshake-only", action="store_true", help="no server/discover: sessions, as before 2026-07-28")
    parser.add_argument("--list-changed", action="store_true", help="add list_changed.py's tools")
    parser.add_argument("--http-errors", action="store_true", help="add fail_next: a gateway answering HTTP errors")
    parser.add_argument("--refuse-first", type=int, default=0, help="with --http-errors: 503 to the first N POSTs")
    parser.add_argument("--exit-on-stdin-close", action="store_true")
    parser.add_argument("--blob", action="store_true", help="add blob(kib): a text of kib KiB")
    parser.add_argument("--gzip", action="store_true", help="compress answers (not event streams)")
    return parser


def main() -> None:
    args = build_parser(__doc__).parse_args()
    try:
        trio.run(main_async, args)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
