"""Policy and entry points: the supervision tree, config, the façade, the daemon."""

from ._tree import (
    Backoff,
    ChildExited,
    ChildSpec,
    Intensity,
    Restart,
    Strategy,
    Supervisor,
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
    "SupervisorGaveUp",
]
