"""Calling what the mcp SDK deprecates at 2026-07-28, without its warning.

Handshake-era peers still use ``logging/setLevel``, ``resources/subscribe`` and log
notifications, so the supervisor still calls what the SDK marks deprecated for them. The
SDK warns when such a function is called (when its coroutine is made), not while it runs,
so only that call is wrapped. ``warnings.catch_warnings`` swaps the filters of the whole
process: one held across an await would hide every warning of every other task meanwhile
(the host's own too, when embedded), and two that ended in the other order would leave
the process with warnings off for good.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from mcp.shared.exceptions import MCPDeprecationWarning

__all__ = ["call_deprecated"]

P = ParamSpec("P")
T = TypeVar("T")


def call_deprecated(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` without the SDK's deprecation warning; other warnings pass.

    For an async ``fn`` this makes its coroutine: await it outside. ``fn`` must be one that
    warns when called and calls nothing deprecated as it runs: the SDK's session methods
    (its ``Client`` methods call those, and would warn again once awaited)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        return fn(*args, **kwargs)
