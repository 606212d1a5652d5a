"""Policy and entry points: the supervision tree, config, the façade, the daemon.

The public names below are loaded on first use (PEP 562): ``python -m supervisor status``
and the other commands that only talk to a running daemon then start without importing
the mcp SDK or openai-agents (0.9 s -> 0.2 s per command). ``from supervisor import X``
and ``supervisor.X`` work as with eager imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Backoff",
    "ChildExited",
    "ChildSpec",
    "ConfigError",
    "EmbeddedSupervisor",
    "Intensity",
    "Restart",
    "Strategy",
    "SupervisedMCPServer",
    "Supervisor",
    "SupervisorClosed",
    "SupervisorGaveUp",
    "TreeSupervisor",
    "embed",
    "load_config",
]

#: Where each public name lives.
_HOMES = {
    "ConfigError": "._config",
    "load_config": "._config",
    "Supervisor": "._facade",
    "Backoff": "._tree",
    "ChildExited": "._tree",
    "ChildSpec": "._tree",
    "Intensity": "._tree",
    "Restart": "._tree",
    "Strategy": "._tree",
    "TreeSupervisor": "._tree",
    "SupervisorGaveUp": "._tree",
    # embedding in asyncio hosts (issue 6)
    "EmbeddedSupervisor": "._embed",
    "SupervisorClosed": "._embed",
    "embed": "._embed",
    "SupervisedMCPServer": "._agents",  # openai-agents takes seconds to import
}

if TYPE_CHECKING:
    from ._agents import SupervisedMCPServer
    from ._config import ConfigError, load_config
    from ._embed import EmbeddedSupervisor, SupervisorClosed, embed
    from ._facade import Supervisor
    from ._tree import Backoff, ChildExited, ChildSpec, Intensity, Restart, Strategy, SupervisorGaveUp, TreeSupervisor


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
