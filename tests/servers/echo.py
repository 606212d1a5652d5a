"""A well-behaved MCP server over stdio.

Tools: echo (readOnlyHint), add (idempotentHint), write_note (destructiveHint; appends
``write_note <text>`` to $EXEC_LOG), sleep (progress every 0.1 s), fail (isError), pid.
Prompt ``greet``, resource ``info://server``.

    python tests/servers/echo.py [--name NAME]
"""

from _common import base_parser, make_server, serve_stdio


def main() -> None:
    args = base_parser(__doc__).parse_args()
    serve_stdio(make_server(args.name or "echo"))


if __name__ == "__main__":
    main()
