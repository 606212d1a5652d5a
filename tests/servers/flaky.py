"""A server whose ``work(x)`` tool fails on every k-th call (counted in this process).

``--mode error`` (default): the k-th call raises inside the tool, so the result is a tool
error (``isError: true``). ``--mode crash``: the k-th call does ``os._exit(5)`` instead.
Other calls return ``x * 2``. $EXEC_LOG gets ``work <n> <x>`` for every call that runs.
Also serves the echo tool set.

    python tests/servers/flaky.py [--every K] [--mode error|crash] [--name NAME]
"""

import os

from _common import base_parser, exec_log, make_server, serve_stdio


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--every", type=int, default=3, help="fail every K-th call of work")
    parser.add_argument("--mode", choices=("error", "crash"), default="error")
    args = parser.parse_args()
    mcp = make_server(args.name or "flaky")
    calls = 0

    @mcp.tool()
    def work(x: int) -> int:
        """Return x * 2, except every k-th call fails (tool error, or a process crash)."""
        nonlocal calls
        calls += 1
        exec_log(f"work {calls} {x}")
        if calls % args.every == 0:
            if args.mode == "crash":
                os._exit(5)
            raise RuntimeError(f"flaky failure on call {calls}")
        return x * 2

    serve_stdio(mcp)


if __name__ == "__main__":
    main()
