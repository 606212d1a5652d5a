"""``python -m supervisor``: supervise the configured MCP servers until told to stop.

This is the daemon's first cut: it supervises the servers of ``--config FILE`` (or the
bundled demo server when no file is given), logs every transition, prints the supervision
tree once everything has started and again on SIGUSR1, and stops cleanly on SIGINT or
SIGTERM (exit code 0; a second signal forces the exit). The aggregated MCP endpoint and the
HTTP status routes are not served yet.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from ._config import ConfigError, default_config, load_config
from ._facade import Supervisor

log = logging.getLogger("supervisor")


def render_tree(node, indent: str = "") -> str:
    """The status tree as text, in the supervisor vocabulary."""
    parts = [f"{node.state}"]
    if node.strategy:
        parts.append(node.strategy)
    if node.restarts:
        parts.append(f"restarts={node.restarts}")
    if node.next_attempt_in is not None:
        parts.append(f"next attempt in {node.next_attempt_in:.1f}s")
    if node.last_exit and node.state != "running":
        parts.append(f"last exit: {node.last_exit}")
    detail = node.detail or {}
    if "state" in detail:
        parts.append(f"breaker {detail['state']}")
    if "pid" in detail:
        parts.append(f"{detail['tools']} tools, pid {detail['pid']}")
    lines = [f"{indent}{node.id}: {', '.join(parts)}"]
    for child in node.children:
        lines.append(render_tree(child, indent + "  "))
    return "\n".join(lines)


async def run(config_path: str | None) -> int:
    try:
        config = load_config(config_path) if config_path else default_config()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    async with Supervisor(config.servers, toolsets=config.settings.toolsets or None) as sup:
        print(render_tree(sup.status()), flush=True)
        tools = ", ".join(t.name for t in sup.list_tools())
        print(f"tools: {tools}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as signals:
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    print(render_tree(sup.status()), flush=True)
                    continue
                log.info("received %s: stopping the tree", signal.Signals(signum).name)
                break
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m supervisor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    run_parser = sub.add_parser("run", help="supervise the configured servers (the default command)")
    for p in (parser, run_parser):
        p.add_argument("--config", help="an mcpServers JSON or TOML file (default: the bundled demo)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return trio.run(run, args.config)


if __name__ == "__main__":
    sys.exit(main())
