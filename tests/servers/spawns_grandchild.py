"""A server that starts a long-lived child process at startup and can die leaving it behind.

The child (``python -c "import time; time.sleep(3600)"``) stays in the server's process group,
unless ``--child-session new`` starts it in a session (and process group) of its own, as a
daemonizing helper would: a kill aimed at the server's group then misses it. ``child_pid()``
reports its pid; ``--child-pid-file PATH`` also appends it to
PATH at startup (a line per start), so a test can clean up even when the server is gone.

``--exit-after SECONDS``: the server itself ``os._exit(0)``s after that long, orphaning the
child in the same process group: the direct child exits quickly and leaves its own child behind.
``--exit-when PATH``: the same, but when the test says so: once PATH exists (looked for every
20 ms). The server removes PATH as it exits, so the next server started with it (a restart)
stays up until PATH is made again. A test that must talk to the server first uses this; a
timer started before the server serves is a race on a loaded machine.
``--child-stdio inherit`` (default): the child inherits the server's stdin/stdout/stderr, so
it keeps the client's stdout pipe open after the server dies (no EOF reaches the client);
``--child-stdio devnull`` detaches it from the pipes.
The server also exits when its stdin closes (the usual stdio behaviour), leaving the child.
``--child-env clear`` starts the child with an empty environment: with ``--child-session new``
nothing marks it as the server's any more (the one escape from the supervisor's kill).
``--spawn-on-term``: SIGTERM does not stop the server; it starts a daemonizing helper
(``sleep 3600`` in a session of its own) every millisecond, 3000 times, as a server whose
cleanup goes wrong might (run it with ``MCP_TEST_STUBBORN=1`` so it outlives its stdin).

    python tests/servers/spawns_grandchild.py [--exit-after S] [--exit-when PATH] [--child-stdio inherit|devnull]
        [--child-session same|new] [--child-env inherit|clear] [--child-pid-file PATH]
        [--spawn-on-term] [--name NAME]
"""

import os
import signal
import subprocess
import sys
import threading
import time

from _common import base_parser, make_server, serve_stdio


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--exit-after", type=float, default=None)
    parser.add_argument("--exit-when", default=None)
    parser.add_argument("--child-stdio", choices=("inherit", "devnull"), default="inherit")
    parser.add_argument("--child-session", choices=("same", "new"), default="same")
    parser.add_argument("--child-pid-file", default=None)
    parser.add_argument("--child-env", choices=("inherit", "clear"), default="inherit")
    parser.add_argument("--spawn-on-term", action="store_true")
    args = parser.parse_args()
    if args.spawn_on_term:
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=_spawn_helpers, daemon=True).start())

    stdio = {}
    if args.child_stdio == "devnull":
        stdio = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)"],
        start_new_session=args.child_session == "new",
        env={} if args.child_env == "clear" else None,
        **stdio,
    )
    if args.child_pid_file:
        with open(args.child_pid_file, "a", encoding="utf-8") as f:  # one line per start
            f.write(f"{child.pid}\n")

    if args.exit_after is not None:
        timer = threading.Timer(args.exit_after, os._exit, args=(0,))
        timer.daemon = True
        timer.start()
    if args.exit_when is not None:
        threading.Thread(target=_exit_when, args=(args.exit_when,), daemon=True).start()

    mcp = make_server(args.name or "spawns_grandchild")

    @mcp.tool()
    def child_pid() -> int:
        """The pid of the long-lived child process."""
        return child.pid

    serve_stdio(mcp)


def _exit_when(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.02)
    os.unlink(path)  # taken: a restarted server waits for the next one
    os._exit(0)


def _spawn_helpers() -> None:
    for _ in range(3000):
        if os.fork() == 0:
            os.setsid()
            os.execv("/bin/sleep", ["sleep", "3600"])
        time.sleep(0.001)


if __name__ == "__main__":
    main()
