"""A well-behaved MCP server over stdio.

Tools: echo (readOnlyHint), add (idempotentHint), write_note (destructiveHint; appends
``write_note <text>`` to $EXEC_LOG), sleep (progress every 0.1 s), fail (isError), pid.
Prompt ``greet``, resource ``info://server``.

``--odd-names`` adds two tools whose names MCP allows and model APIs refuse (OpenAI and
Anthropic take ``^[a-zA-Z0-9_-]{1,64}$``): ``comfy.workflow/validate`` and one of 70
characters (``LONG_NAME``). Each answers with its own name.

``--slow-prompt`` adds prompt ``slow(seconds)``: answers after that many seconds (and on
arrival writes ``slow prompt <seconds>`` to $EXEC_LOG, when set).

``--failing-list METHOD`` (repeatable: ``tools/list``, ``prompts/list``, ``resources/list``,
``resources/templates/list``) answers that request with an error, as a server whose listing
depends on something broken does, while everything else works.

    python tests/servers/echo.py [--name NAME] [--odd-names] [--slow-prompt] [--failing-list METHOD ...]
"""

import dataclasses

import anyio

from _common import base_parser, exec_log, make_server, serve_stdio

ODD_NAME = "comfy.workflow/validate"
LONG_NAME = "get_active_ingredient_application_number_by_drug_name_and_route_of_use"


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--odd-names", action="store_true")
    parser.add_argument("--slow-prompt", action="store_true")
    parser.add_argument("--failing-list", action="append", default=[], metavar="METHOD")
    args = parser.parse_args()
    mcp = make_server(args.name or "echo")
    if args.odd_names:
        for name in (ODD_NAME, LONG_NAME):
            mcp.add_tool(answering(name), name=name, description=f"Answers {name!r}.")
    if args.slow_prompt:
        mcp.prompt(name="slow", description="Answers after `seconds` s.")(slow)
    handlers = mcp._lowlevel_server._request_handlers  # no public way to break one in mcp 2.3
    for method in args.failing_list:
        handlers[method] = dataclasses.replace(handlers[method], handler=failing(method))
    serve_stdio(mcp)


def failing(method: str):
    async def handler(*args, **kwargs):
        raise RuntimeError(f"{method} is broken here")

    return handler


async def slow(seconds: str) -> str:
    exec_log(f"slow prompt {seconds}")  # a test waits for this to know the request arrived
    await anyio.sleep(float(seconds))
    return f"slept {seconds} s"


def answering(name: str):
    def tool() -> str:
        return name

    return tool


if __name__ == "__main__":
    main()
