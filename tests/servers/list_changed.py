"""A server whose ``add_tool(name)`` registers a new tool at run time and announces it.

The new tool echoes its ``text`` argument back prefixed with its own name. The change is
announced both ways mcp 2.3 knows:
- handshake era (``mode="legacy"``): a ``notifications/tools/list_changed`` on the
  connection (``ctx.session.send_tool_list_changed()``), and ``tools.listChanged`` is
  advertised in the initialize result;
- 2026-07-28 era (``mode="auto"`` against this server): an event on the server's
  subscription bus (``ctx.notify_tools_changed()``), delivered only to clients holding a
  ``subscriptions/listen`` stream (``Client.listen(tools_list_changed=True)``); the
  bare connection notification is dropped by the SDK at this era.
Also serves the echo tool set, plus ``announce(times)``, which announces a change ``times``
times in a burst (changing nothing), and ``lists_served()``, how many ``tools/list`` requests
it has answered and the most it served at once (each takes 5 ms); ``end_listen_streams()``
ends every open ``subscriptions/listen`` stream and ``listen_streams()`` counts them. For the handshake era over HTTP: ``http_echo.py --handshake-only
--list-changed``.

``--handshake-only`` makes it a server from before 2026-07-28 (no ``server/discover``: a
client falls back to ``initialize``, and list changes come as plain notifications).
``--change-while-listing-resources NAME``: the first ``resources/list`` request registers
tool NAME and announces it before answering (both ways), so the announcement reaches a
client that is still reading the server's lists at connect (at 2026-07-28: reaches no one,
since that client has no listen stream open yet).

    python tests/servers/list_changed.py [--name NAME] [--handshake-only] [--change-while-listing-resources NAME]
"""

import dataclasses

import anyio
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.runner import serve_loop
from mcp.server.stdio import stdio_server
from mcp.shared.subscriptions import ToolsListChanged

from _common import base_parser, make_server


def register(mcp: MCPServer) -> None:
    @mcp.tool()
    async def add_tool(name: str, ctx: Context, notify: bool = True) -> str:
        """Register a tool called `name` and (unless `notify` is false) notify the client
        that the tool list changed."""

        def dynamic(text: str) -> str:
            return f"{name}: {text}"

        mcp.add_tool(dynamic, name=name, description=f"dynamically added tool {name}")
        if notify:
            await ctx.session.send_tool_list_changed()  # handshake era (dropped at 2026-07-28)
            await ctx.notify_tools_changed()  # 2026-07-28 era: subscriptions/listen streams
        return f"added {name}"

    @mcp.tool()
    async def announce(times: int, ctx: Context) -> str:
        """Announce a tool-list change `times` times in a row, changing nothing."""
        for _ in range(times):
            await ctx.session.send_tool_list_changed()
            await ctx.notify_tools_changed()
        return f"announced {times}"

    counts = {"served": 0, "at_once": 0, "most_at_once": 0}
    list_tools = mcp.list_tools

    async def counting_list_tools():
        counts["at_once"] += 1
        counts["most_at_once"] = max(counts["most_at_once"], counts["at_once"])
        try:
            await anyio.sleep(0.005)  # a read takes a moment, as a real server's does
            return await list_tools()
        finally:
            counts["at_once"] -= 1
            counts["served"] += 1

    mcp.list_tools = counting_list_tools  # what the tools/list handler calls

    def listen_handler():  # the SDK's ListenHandler; mcp 2.3 keeps it only in the handler table
        return mcp._lowlevel_server._request_handlers["subscriptions/listen"].handler  # pyright: ignore[reportPrivateUsage]

    @mcp.tool()
    def end_listen_streams() -> str:
        """End every open subscriptions/listen stream gracefully (as a restart or a capped
        backlog would)."""
        listen_handler().close()
        return "ended"

    @mcp.tool()
    def listen_streams() -> int:
        """How many subscriptions/listen streams are open."""
        return len(listen_handler()._streams)  # pyright: ignore[reportPrivateUsage]

    @mcp.tool()
    def lists_served() -> dict[str, int]:
        """How many tools/list requests this server has answered, and the most at once."""
        return {"served": counts["served"], "most_at_once": counts["most_at_once"]}


async def serve(mcp: MCPServer, handshake_only: bool = False) -> None:
    # MCPServer.run_stdio_async() advertises listChanged=false; pass the flag ourselves.
    lowlevel = mcp._lowlevel_server  # pyright: ignore[reportPrivateUsage]
    options = lowlevel.create_initialization_options(NotificationOptions(tools_changed=True))
    async with stdio_server() as (read_stream, write_stream):
        if not handshake_only:
            await lowlevel.run(read_stream, write_stream, options)  # the era the client opens with
            return
        # The SDK's handshake-only loop: `server/discover` is refused, so a client falls back
        # to `initialize`, as against any server from before 2026-07-28.
        async with lowlevel.lifespan(lowlevel) as state:
            await serve_loop(lowlevel, read_stream, write_stream, lifespan_state=state, init_options=options)


def change_while_listing_resources(mcp: MCPServer, name: str) -> None:
    handlers = mcp._lowlevel_server._request_handlers  # pyright: ignore[reportPrivateUsage]
    entry = handlers["resources/list"]
    done = False

    async def handler(ctx, params):
        nonlocal done
        if not done:
            done = True
            mcp.add_tool(lambda text: f"{name}: {text}", name=name, description=f"added during resources/list: {name}")
            await ctx.session.send_tool_list_changed()  # handshake era
            await mcp._subscriptions.publish(ToolsListChanged())  # pyright: ignore[reportPrivateUsage]
            # (that is 2026-07-28: to the listen streams open, and none is yet)
        return await entry.handler(ctx, params)

    handlers["resources/list"] = dataclasses.replace(entry, handler=handler)


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--handshake-only", action="store_true")
    parser.add_argument("--change-while-listing-resources", metavar="NAME")
    args = parser.parse_args()
    mcp = make_server(args.name or "list_changed")
    register(mcp)
    if args.change_while_listing_resources:
        change_while_listing_resources(mcp, args.change_while_listing_resources)
    anyio.run(serve, mcp, args.handshake_only)


if __name__ == "__main__":
    main()
