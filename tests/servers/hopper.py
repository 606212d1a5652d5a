"""A server whose helper leaves its process group and then keeps changing its pid.

At startup the server forks a helper that ignores SIGTERM, detaches from the pipes, calls
``setsid`` once (a session and process group of its own, numbered by its pid), then forks
and exits after a pause of up to ``--pause`` s (default 0.005), again and again: a process that is never at one pid for long, so a kill aimed at
a pid found in /proc finds it gone, while its process group (kept across the forks) stays.
Every copy carries the server's environment (the supervisor's incarnation id with it).
``hopper_group()`` reports the helper's process group, so a test can clean it up.
``--lifetime S`` (default 60): the helper stops after that long even if nothing kills it,
so one that escapes does not load the machine for ever.

    python tests/servers/hopper.py [--pause S] [--lifetime S] [--name NAME]
"""

import os
import random
import signal
import sys
import time


def _hop(lifetime: float, pause: float) -> None:
    """The helper: never returns."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.setsid()
        end = time.monotonic() + lifetime
        while time.monotonic() < end:
            if os.fork():
                os._exit(0)
            time.sleep(random.uniform(0, pause))
    finally:
        os._exit(0)


def main() -> None:
    def flag(name: str, default: float) -> float:
        return float(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default

    helper = os.fork()  # before the SDK is imported: the helper runs nothing but os calls
    if helper == 0:
        _hop(flag("--lifetime", 60.0), flag("--pause", 0.005))

    from _common import base_parser, make_server, serve_stdio

    parser = base_parser(__doc__)
    parser.add_argument("--lifetime", type=float, default=60.0)
    parser.add_argument("--pause", type=float, default=0.005)
    args = parser.parse_args()
    mcp = make_server(args.name or "hopper")

    @mcp.tool()
    def hopper_group() -> int:
        """The helper's process group (its first pid, which ``setsid`` made a group leader)."""
        return helper

    serve_stdio(mcp)


if __name__ == "__main__":
    main()
