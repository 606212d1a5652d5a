"""The echo server, after a blocking ``time.sleep(--delay)`` before it starts reading stdin.

    python tests/servers/slow_start.py [--delay SECONDS] [--name NAME]
"""

import time

from _common import base_parser, make_server, serve_stdio


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--delay", type=float, default=2.0, help="seconds to sleep before serving")
    args = parser.parse_args()
    time.sleep(args.delay)
    serve_stdio(make_server(args.name or "slow_start"))


if __name__ == "__main__":
    main()
