"""Policy and entry points: the supervision tree, config, the façade, the daemon."""

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
    "Intensity",
    "Restart",
    "Strategy",
    "Supervisor",
    "TreeSupervisor",
    "SupervisorGaveUp",
]
