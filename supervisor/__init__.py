"""Policy and entry points: the supervision tree, config, the façade, the daemon."""

from ._config import ConfigError, load_config
from ._facade import Supervisor
from ._tree import (
    Backoff,
    ChildExited,
    ChildSpec,
    Intensity,
    Restart,
    Strategy,
    TreeSupervisor,
    SupervisorGaveUp,
)

__all__ = [
    "Backoff",
    "ChildExited",
    "ChildSpec",
    "ConfigError",
    "Intensity",
    "Restart",
    "Strategy",
    "Supervisor",
    "TreeSupervisor",
    "SupervisorGaveUp",
    "load_config",
]

# -- embedding in asyncio hosts (issue 6) ---------------------------------------------------

from ._embed import EmbeddedSupervisor, SupervisorClosed, embed  # noqa: E402

__all__ += ["EmbeddedSupervisor", "SupervisedMCPServer", "SupervisorClosed", "embed"]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # openai-agents takes seconds to import: only code that uses the adapter pays for it.
    if name == "SupervisedMCPServer":
        from ._agents import SupervisedMCPServer

        return SupervisedMCPServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
