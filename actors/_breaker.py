"""The circuit breaker: a pure state machine, the view the router reads, and the actor.

Three pieces, one owner:

- ``BreakerCore`` is a small synchronous state machine. It never reads a clock: every method
  that depends on time takes ``now`` (trio-clock seconds), so a ``MockClock`` drives it
  through the actor and a plain test drives it with numbers.
- ``BreakerView`` is what the router reads on the hot path, synchronously. Only the breaker
  actor writes it. While the breaker is closed (or disabled) ``view.admit()`` is one
  attribute read: no actor hop per call.
- ``breaker_actor`` owns one core, answers ``Permit`` asks, takes ``CallOutcome`` reports
  (sent with ``tell_nowait``, off the hot path), obeys the operator and the connection,
  rewrites the view and publishes a ``breaker_state`` event on every state change.

States (``BreakerState``):

- ``closed``: every call goes through; outcomes are counted.
- ``open``: calls fail fast with ``CircuitOpen``. Tripped by failures it stays open for the
  current open time, then lets trial calls through (``half_open``). Opened because the
  connection is down it stays open until ``connection_up``.
- ``half_open``: at most ``half_open_permits`` trial calls at once. The first trial success
  closes the breaker; a trial failure reopens it with twice the open time.
- ``forced_open``: the operator opened it; nothing gets through until ``reset``.
- ``disabled``: the operator (or ``enabled = false`` in the config) turned it off; every
  call goes through and nothing is counted until ``reset``.

It trips (closed -> open) on whichever comes first, checked after every counted outcome:

1. ``failure_threshold`` consecutive failures;
2. failure rate: over the last ``window`` counted calls, once at least ``min_calls`` of
   them are in, ``failures / calls >= failure_rate``;
3. slow-call rate, only when ``slow_call_seconds`` is set: over the same window, once at
   least ``min_calls`` are in, ``slow / calls >= slow_call_rate``. A call is slow when its
   report says so or its duration is ``>= slow_call_seconds`` (successes and failures alike).

How outcomes count (``protocol.BREAKER_FAILURES`` / ``BREAKER_IGNORED``):

- ``success``, ``tool_error`` and ``InvalidResult`` are successes: the server answered (a
  result its own schema rejects is a bug of that tool; the breaker guards the server's
  availability, and fencing off every tool for one tool's bug would not help anyone).
- ``ServerCrashed``, ``DeadlineExceeded``, ``ServerUnavailable`` are failures.
- ``cancelled``, ``UnknownTool``, ``InvalidArguments``, ``CircuitOpen``, ``Overloaded`` are
  ignored: never a failure, never a success. In ``half_open`` an ignored outcome hands its
  trial permit back. Kinds the breaker does not know are ignored too (a typo must not trip
  a server). ``Overloaded`` departs from the design, which counted it: it is the
  supervisor's own queue (``max_concurrency`` + ``max_queue``) turning a call away
  unsent, a sign of load and not of ill health (a server too slow to keep up shows in its
  calls' timeouts and slow-call rate). Counted, a burst of 100 concurrent callers on a
  healthy server opened its breaker in a moment and failed 94% of 12,500 calls over the
  next 20 s with ``CircuitOpen`` (measured 2026-12-04), and a burst that lasts doubles the
  open time on each trial.
- A *stale* outcome, one whose call started before the breaker last left ``closed`` (or was
  reset), is ignored: it describes the previous regime, and a burst of late timeouts must not
  re-trip a breaker whose trial just succeeded. The actor derives the start as
  ``outcome.at - outcome.duration`` (``at`` is when the attempt finished).

Choices where the design left room:

- Open time: the n-th consecutive trip stays open ``min(max_open_seconds,
  open_seconds * 2**(n-1))``. The count of consecutive trips (``trips``) goes back to 0 once
  the breaker, closed again, has counted ``window`` successes without tripping, and on
  ``reset``.
- Connection down: the breaker shows ``open`` (reason ``connection down: ...``) until
  ``connection_up``; no trial is admitted meanwhile and no timer runs. ``ConnectionDown`` may
  carry the expected reconnect time as ``retry_at``, shown in ``CircuitOpen`` as a hint;
  once the attempt has begun (``Connecting``), callers are told it is under way, since when
  and for how long at most (its ``connect_timeout``), not a trial "in 0 s" while it lasts.
  On ``connection_up`` the new process gets fresh counts: a breaker that was closed goes back
  to ``closed`` at once (the connection's own handshake and ``tools/list`` are the probe, so
  callers are not throttled after every restart); one that had tripped on call failures goes
  to ``half_open`` at once, so the first call is its trial. Operator states win over the
  connection: a forced-open or disabled breaker stays so; ``reset`` while the connection is
  down gives ``open`` (connection down).
- Trial permits are leased: a permit whose outcome never arrives (a report dropped on a
  full mailbox) is forgotten after ``permit_lease`` seconds, so a lost report cannot wedge
  the breaker half-open.
- A slow success in ``half_open`` is still a success: it closes.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Final, Literal

import msgspec
import trio

from protocol import BREAKER_FAILURES, ActorDown, BreakerPolicy, CallOutcome, CircuitOpen, Overloaded

from ._events import publish
from ._runtime import Mailbox, Ref, spawn

__all__ = [
    "BreakerCore",
    "BreakerCounts",
    "BreakerMessage",
    "BreakerSnapshot",
    "BreakerState",
    "BreakerView",
    "ConnectionDown",
    "ConnectionUp",
    "Connecting",
    "Disable",
    "ForceOpen",
    "Permit",
    "PermitGranted",
    "SetPolicy",
    "Reset",
    "Snapshot",
    "Transition",
    "admit_call",
    "breaker_actor",
    "check_policy",
    "report_outcome",
    "spawn_breaker",
]

BreakerState = Literal["closed", "open", "half_open", "forced_open", "disabled"]

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
FORCED_OPEN: Final = "forced_open"
DISABLED: Final = "disabled"

#: Outcome kinds that count as a success: the server answered (``tool_error`` is the tool's
#: own error, the caller's problem, not the server's health).
BREAKER_SUCCESSES: Final = frozenset({"success", "tool_error", "InvalidResult"})

#: Tolerance when comparing an outcome's derived start time with the stale marker.
_STALE_EPSILON: Final = 1e-9

DEFAULT_PERMIT_LEASE: Final = 60.0


# ---------------------------------------------------------------------------------------------
# Data: counts, transitions, messages, answers


class BreakerCounts(msgspec.Struct, frozen=True, kw_only=True):
    """The numbers behind a decision, as carried by transitions, events and snapshots."""

    consecutive_failures: int
    window_calls: int
    window_failures: int
    window_slow: int
    failure_rate: float
    slow_rate: float
    trips: int
    open_seconds: float  # how long the *next* (or current) open period lasts


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """One state change. ``from`` on the wire (``from_`` in Python)."""

    from_: str = msgspec.field(name="from")
    to: str
    reason: str
    at: float
    retry_at: float | None
    counts: BreakerCounts


class Permit(msgspec.Struct, frozen=True):
    """Ask: may one call go now? Answer ``PermitGranted``, or fails with ``CircuitOpen``."""


class PermitGranted(msgspec.Struct, frozen=True):
    """``trial`` is True when the call is a half-open trial (its outcome decides the state)."""

    trial: bool


class ForceOpen(msgspec.Struct, frozen=True):
    """Operator: open the breaker until ``Reset``. Tell or ask (answer: the new ``Snapshot``)."""

    reason: str = "operator"


class Disable(msgspec.Struct, frozen=True):
    """Operator: let every call through and count nothing until ``Reset``."""

    reason: str = "operator"


class Reset(msgspec.Struct, frozen=True):
    """Operator: back to ``closed`` with fresh counts (``open`` if the connection is down)."""


class SetPolicy(msgspec.Struct, frozen=True):
    """Config reload: go on under ``policy`` (see `BreakerCore.set_policy`)."""

    policy: BreakerPolicy


class ConnectionDown(msgspec.Struct, frozen=True):
    """The connection actor is down or restarting: fail fast until ``ConnectionUp``.

    ``retry_at`` (trio clock) is the expected reconnect time, if known; it is a hint shown
    to callers, not a timer. ``math.inf``: none is coming (the connection failed for good,
    or ended by its restart type), and callers are told so.
    """

    reason: str = "connection down"
    retry_at: float | None = None


class ConnectionUp(msgspec.Struct, frozen=True):
    """The connection is back (handshake done)."""


class Connecting(msgspec.Struct, frozen=True):
    """A connection attempt began at ``started_at`` (trio clock) and ends, connected or
    not, within ``timeout`` s (its ``connect_timeout``; None: unknown). While the
    connection is down it replaces the reconnect hint: callers are told an attempt is
    under way and since when, not a trial "in 0 s" for as long as it lasts. Ignored
    while the connection is not down (a first start)."""

    started_at: float
    timeout: float | None = None


class Snapshot(msgspec.Struct, frozen=True):
    """Ask: answer a ``BreakerSnapshot``."""


class BreakerSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The breaker's state as the status tree shows it."""

    name: str
    state: str
    reason: str
    retry_at: float | None
    counts: BreakerCounts
    trials_in_flight: int
    connection_down: bool
    #: When the connection attempt under way began (trio clock), while the connection is
    #: down and one is (`Connecting`); None otherwise.
    connecting_since: float | None = None
    connect_timeout: float | None = None
    transitions: int
    last_transition: Transition | None
    outcomes: int  # every report received
    ignored: int  # ignored kinds, unknown kinds and outcomes while disabled
    stale: int  # reports about calls that started before the breaker last left closed


BreakerMessage = (
    CallOutcome
    | Permit
    | ForceOpen
    | Disable
    | Reset
    | SetPolicy
    | ConnectionDown
    | ConnectionUp
    | Connecting
    | Snapshot
)


_DISABLED_IN_CONFIG = "disabled in config"


def check_policy(policy: BreakerPolicy) -> None:
    """Raise ``ValueError`` for a policy no breaker can run."""
    if policy.window < 1 or policy.failure_threshold < 1 or policy.half_open_permits < 1:
        raise ValueError("breaker window, failure_threshold and half_open_permits must be >= 1")


def _refusal(
    name: str,
    state: str,
    reason: str,
    retry_at: float | None,
    now: float,
    *,
    timed: bool,
    connecting: tuple[float, float | None] | None = None,
) -> CircuitOpen:
    """The ``CircuitOpen`` a refused call raises: why, and when the next trial happens.
    ``connecting``: (when the attempt under way began, its connect_timeout)."""
    data: dict[str, Any] = {"server": name, "state": state, "reason": reason}
    if state == FORCED_OPEN:
        when = "no trial until an operator resets it"
    elif state == HALF_OPEN:
        when = "the next call is admitted when a trial call finishes"
    elif connecting is not None:
        since, timeout = connecting
        if retry_at is not None:  # when trials may come from: the retry layer reads it
            data["retry_at"] = retry_at
        data["connecting_for"] = connecting_for = max(0.0, now - since)
        data["connect_timeout"] = timeout
        bound = f"up to connect_timeout {timeout:g} s" if timeout is not None else "up to connect_timeout"
        when = f"next trial when the connection is back (connecting: attempt started {connecting_for:.3g} s ago, {bound})"
    elif retry_at == math.inf:
        when = "no trial: the server is not restarted"
    elif retry_at is not None:
        retry_in = max(0.0, retry_at - now)
        data["retry_at"] = retry_at
        data["retry_in"] = retry_in
        if timed:
            when = f"next trial in {retry_in:.3g} s"
        else:
            when = f"next trial when the connection is back (expected in {retry_in:.3g} s)"
    else:
        when = "next trial when the connection is back"
    label = {FORCED_OPEN: "forced open", HALF_OPEN: "half-open"}.get(state, state)
    return CircuitOpen(f"circuit for {name!r} is {label} ({reason}); {when}", **data)


# ---------------------------------------------------------------------------------------------
# The pure state machine


class BreakerCore:
    """The breaker's state machine. Synchronous, clock-free, owned by one actor.

    Mutators never raise except ``check`` (``CircuitOpen``). Each state change is appended
    to a pending list that ``drain_transitions()`` empties, and is kept as
    ``last_transition``; ``transition_count`` counts them all.
    """

    def __init__(
        self,
        policy: BreakerPolicy,
        *,
        name: str = "",
        permit_lease: float = DEFAULT_PERMIT_LEASE,
    ) -> None:
        check_policy(policy)
        self.policy = policy
        self.name = name
        self.permit_lease = permit_lease
        # The health layer: closed / open / half_open, driven by outcomes and time.
        self._health: str = CLOSED
        self._health_reason = "initial"
        self._retry_at: float | None = None
        self.trips = 0
        self._window: deque[tuple[bool, bool]] = deque()  # (failed, slow)
        self._window_failures = 0
        self._window_slow = 0
        self.consecutive_failures = 0
        self._successes_since_close = 0
        self._permits: deque[float] = deque()  # grant times of trial permits in flight
        # Outcomes of calls that started before this are stale.
        self._stale_before = -math.inf
        # The connection layer.
        self.connection_is_down = False
        self._conn_reason = ""
        self._conn_retry_at: float | None = None
        self._connecting: tuple[float, float | None] | None = None  # (since, connect_timeout)
        # The operator layer: None, FORCED_OPEN or DISABLED.
        self._override: str | None = None if policy.enabled else DISABLED
        self._override_reason = "" if policy.enabled else _DISABLED_IN_CONFIG
        # Bookkeeping.
        self._pending: list[Transition] = []
        self.last_transition: Transition | None = None
        self.transition_count = 0
        self.outcomes = 0
        self.ignored = 0
        self.stale = 0

    # -- reading -------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """The effective state: operator override, else connection down, else health."""
        if self._override is not None:
            return self._override
        if self.connection_is_down:
            return OPEN
        return self._health

    @property
    def reason(self) -> str:
        if self._override is not None:
            return self._override_reason
        if self.connection_is_down:
            return self._conn_reason
        return self._health_reason

    @property
    def retry_at(self) -> float | None:
        """When the next trial is admitted (or the reconnect hint), None when unknown."""
        if self._override is not None:
            return None
        if self.connection_is_down:
            return self._conn_retry_at
        return self._retry_at if self._health == OPEN else None

    @property
    def connecting(self) -> tuple[float, float | None] | None:
        """(when it began, its connect_timeout) of the connection attempt under way while the
        connection is down and an operator state does not hide it; None otherwise."""
        if self._override is not None or not self.connection_is_down:
            return None
        return self._connecting

    @property
    def due_at(self) -> float | None:
        """When time alone changes the state (open -> half_open); None when it never does."""
        if self._override is None and not self.connection_is_down and self._health == OPEN:
            return self._retry_at
        return None

    @property
    def trials_in_flight(self) -> int:
        return len(self._permits)

    def open_seconds_for(self, trips: int) -> float:
        """How long the ``trips``-th consecutive trip stays open (1-based)."""
        policy = self.policy
        try:
            seconds = policy.open_seconds * 2.0 ** max(0, trips - 1)
        except OverflowError:
            seconds = math.inf
        return min(policy.max_open_seconds, seconds)

    def counts(self) -> BreakerCounts:
        calls = len(self._window)
        return BreakerCounts(
            consecutive_failures=self.consecutive_failures,
            window_calls=calls,
            window_failures=self._window_failures,
            window_slow=self._window_slow,
            failure_rate=self._window_failures / calls if calls else 0.0,
            slow_rate=self._window_slow / calls if calls else 0.0,
            trips=self.trips,
            open_seconds=self.open_seconds_for(self.trips if self._health == OPEN else self.trips + 1),
        )

    def refusal(self, now: float) -> CircuitOpen:
        """The ``CircuitOpen`` a call refused right now would raise."""
        state = self.state
        return _refusal(
            self.name,
            state,
            self.reason,
            self.retry_at,
            now,
            timed=state == OPEN and not self.connection_is_down,
            connecting=self.connecting,
        )

    def drain_transitions(self) -> list[Transition]:
        """The transitions since the last drain, oldest first."""
        pending, self._pending = self._pending, []
        return pending

    # -- time ----------------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Apply what time alone decides: open -> half_open once the open time is over."""
        due = self.due_at
        if due is not None and now >= due:
            before = self._mark()
            self._health = HALF_OPEN
            self._health_reason = f"open time over after {self.open_seconds_for(self.trips):g} s; admitting trial calls"
            self._permits.clear()
            self._note(before, now)

    # -- the call path -------------------------------------------------------------------------

    def check(self, now: float) -> bool:
        """Admit one call or raise ``CircuitOpen``.

        Returns True when the call took a half-open trial permit (its outcome decides the
        state; hand the permit back with ``release_permit`` if the call ends up ignored),
        False when it was admitted without one (closed or disabled).
        """
        self.advance(now)
        state = self.state
        if state == CLOSED or state == DISABLED:
            return False
        if state == HALF_OPEN:
            permits = self._permits
            while permits and permits[0] + self.permit_lease <= now:
                permits.popleft()  # a lost report: forget its permit
            if len(permits) < self.policy.half_open_permits:
                permits.append(now)
                return True
            raise _refusal(
                self.name,
                HALF_OPEN,
                f"{len(permits)} trial call{'s' if len(permits) != 1 else ''} in flight",
                None,
                now,
                timed=False,
            )
        raise self.refusal(now)

    def release_permit(self, started_at: float = math.inf) -> None:
        """Hand back the trial permit of a call that started at ``started_at`` (default: the
        newest permit): the newest one granted no later than that. Nothing when there is
        none (that call's permit was already forgotten, its lease over)."""
        permits = self._permits
        for i in range(len(permits) - 1, -1, -1):
            if permits[i] <= started_at + _STALE_EPSILON:
                del permits[i]
                return

    def record(
        self, outcome_kind: str, now: float, *, slow: bool = False, started_at: float | None = None, trial: bool = False
    ) -> None:
        """Count one finished call. See the module docstring for what counts as what.

        ``slow`` is honoured only when the policy sets ``slow_call_seconds``. ``started_at``
        (when the call started, trio clock) lets the breaker drop stale reports. ``trial``:
        the call held a half-open trial permit; only such a call's outcome decides (or, if
        ignored, hands back) a permit.
        """
        self.outcomes += 1
        if started_at is not None and started_at < self._stale_before - _STALE_EPSILON:
            self.stale += 1
            return
        if outcome_kind in BREAKER_FAILURES:
            failed = True
        elif outcome_kind in BREAKER_SUCCESSES:
            failed = False
        else:  # BREAKER_IGNORED, or a kind we do not know
            self.ignored += 1
            if self.state == HALF_OPEN and trial:
                self.release_permit(math.inf if started_at is None else started_at)
            return
        # While only the connection is down the health machine still counts: the failure that
        # took the connection down is news about the server.
        state = self._health if self._override is None and self.connection_is_down else self.state
        if state == CLOSED:
            slow = slow and self.policy.slow_call_seconds is not None
            self._count(failed, slow)
            if failed or slow:  # a slow success can trip on the slow-call rate
                trip = self._trip_reason()
                if trip is not None:
                    self._trip(now, trip)
                    return
            if not failed:
                self._successes_since_close += 1
                if self.trips and self._successes_since_close >= self.policy.window:
                    self.trips = 0  # a healthy closed period: the open time starts over
        elif state == HALF_OPEN and not trial:
            self.ignored += 1  # no trial of this round (a call refused, or not admitted at all)
        elif state == HALF_OPEN:
            self.release_permit()
            if failed:
                self._trip(now, f"trial call failed ({outcome_kind})")
            else:
                before = self._mark()
                self._close("trial call succeeded")
                self._note(before, now)
        else:
            # open: a late trial of an earlier half-open round; forced_open/disabled: nothing
            # counts. Neither changes the state.
            self.ignored += 1

    # -- operator and connection ----------------------------------------------------------------

    def force_open(self, now: float, reason: str = "operator") -> None:
        before = self._mark()
        self._override = FORCED_OPEN
        self._override_reason = reason  # the state says "forced open" already
        self._stale_before = now
        self._permits.clear()
        self._note(before, now)

    def disable(self, now: float, reason: str = "operator") -> None:
        before = self._mark()
        self._override = DISABLED
        self._override_reason = reason
        self._permits.clear()
        self._note(before, now)

    def reset(self, now: float) -> None:
        """Back to ``closed`` with fresh counts and open time (``open`` if the connection is down)."""
        before = self._mark()
        self._override = None
        self._override_reason = ""
        self.trips = 0
        self._close("reset by operator")
        self._stale_before = now
        self._note(before, now)

    def set_policy(self, now: float, policy: BreakerPolicy) -> None:
        """Go on under ``policy`` (a config reload): the counts are kept, cut to the new
        window, and judged by the new thresholds from the next outcome on; an open breaker
        keeps its retry time; ``enabled`` turns the config's own ``disabled`` on or off (an
        operator's override stays as it is). Raises ``ValueError`` for an invalid policy."""
        check_policy(policy)
        before = self._mark()
        self.policy = policy
        window = self._window
        while len(window) > policy.window:
            failed, slow = window.popleft()
            self._window_failures -= failed
            self._window_slow -= slow
        if not policy.enabled and self._override is None:
            self._override, self._override_reason = DISABLED, _DISABLED_IN_CONFIG
        elif policy.enabled and self._override == DISABLED and self._override_reason == _DISABLED_IN_CONFIG:
            self._override, self._override_reason = None, ""
        self._note(before, now)

    def connection_down(self, now: float, reason: str = "connection down", retry_at: float | None = None) -> None:
        before = self._mark()
        self.connection_is_down = True
        self._conn_reason = reason if reason.startswith("connection down") else f"connection down: {reason}"
        self._conn_retry_at = retry_at
        self._connecting = None  # a new down: any attempt under way has ended
        # Not a stale marker: the failure that took the connection down still counts.
        self._permits.clear()
        self._note(before, now)

    def connecting_began(self, started_at: float, timeout: float | None = None) -> None:
        """A connection attempt began at ``started_at`` (`Connecting`): while the connection
        is down, callers are told so in place of the reconnect hint, whose time has come
        (``retry_at`` stays, in ``CircuitOpen``'s data, as when trials may come from, without
        a ``retry_in``). Nothing while it is not down. Never a transition (state and reason
        are unchanged)."""
        if self.connection_is_down:
            self._connecting = (started_at, timeout)

    def connection_up(self, now: float) -> None:
        if not self.connection_is_down:
            return
        before = self._mark()
        self.connection_is_down = False
        self._conn_reason = ""
        self._conn_retry_at = None
        self._connecting = None
        if self._health == CLOSED:
            # Back to closed, counts kept: a server that crashes on every call must still
            # reach its failure threshold across restarts.
            self._health_reason = "connection up"
        else:
            self._clear_window()
            self._health = HALF_OPEN
            self._health_reason = "connection up; the first call is the trial"
            self._permits.clear()
            self._stale_before = now
        self._note(before, now)

    # -- internals -----------------------------------------------------------------------------

    def _count(self, failed: bool, slow: bool) -> None:
        window = self._window
        if len(window) >= self.policy.window:
            old_failed, old_slow = window.popleft()
            self._window_failures -= old_failed
            self._window_slow -= old_slow
        window.append((failed, slow))
        self._window_failures += failed
        self._window_slow += slow
        self.consecutive_failures = self.consecutive_failures + 1 if failed else 0

    def _trip_reason(self) -> str | None:
        policy = self.policy
        if self.consecutive_failures >= policy.failure_threshold:
            n = self.consecutive_failures
            return f"{n} consecutive failure{'s' if n != 1 else ''}"
        calls = len(self._window)
        if calls >= policy.min_calls:
            rate = self._window_failures / calls
            if rate >= policy.failure_rate:
                return f"failure rate {rate:.0%} over the last {calls} calls"
            if policy.slow_call_seconds is not None:
                rate = self._window_slow / calls
                if rate >= policy.slow_call_rate:
                    return f"slow-call rate {rate:.0%} over the last {calls} calls (>= {policy.slow_call_seconds:g} s)"
        return None

    def _trip(self, now: float, reason: str) -> None:
        before = self._mark()
        self.trips += 1
        self._health = OPEN
        self._health_reason = reason
        self._retry_at = now + self.open_seconds_for(self.trips)
        self._permits.clear()
        if before[0] == CLOSED:
            self._stale_before = now
        self._note(before, now)

    def _close(self, reason: str) -> None:
        self._health = CLOSED
        self._health_reason = reason
        self._retry_at = None
        self._permits.clear()
        self._successes_since_close = 0
        self._clear_window()

    def _clear_window(self) -> None:
        self._window.clear()
        self._window_failures = 0
        self._window_slow = 0
        self.consecutive_failures = 0

    def _mark(self) -> tuple[str, str]:
        return self.state, self.reason

    def _note(self, before: tuple[str, str], now: float) -> None:
        after = self._mark()
        if after == before:
            return
        transition = Transition(
            from_=before[0],
            to=after[0],
            reason=after[1],
            at=now,
            retry_at=self.retry_at,
            counts=self.counts(),
        )
        self._pending.append(transition)
        self.last_transition = transition
        self.transition_count += 1

    def snapshot(self, now: float) -> BreakerSnapshot:
        self.advance(now)
        return BreakerSnapshot(
            name=self.name,
            state=self.state,
            reason=self.reason,
            retry_at=self.retry_at,
            counts=self.counts(),
            trials_in_flight=self.trials_in_flight,
            connection_down=self.connection_is_down,
            connecting_since=None if (connecting := self.connecting) is None else connecting[0],
            connect_timeout=None if connecting is None else connecting[1],
            transitions=self.transition_count,
            last_transition=self.last_transition,
            outcomes=self.outcomes,
            ignored=self.ignored,
            stale=self.stale,
        )


# ---------------------------------------------------------------------------------------------
# The view the router reads


class BreakerView:
    """The breaker's published state, read synchronously by the router.

    Only the breaker actor writes it; readers never block and never hop to the actor while
    the breaker is closed. ``admit()`` answers:

    - True: go ahead, no permit needed (closed or disabled). One attribute read.
    - raises ``CircuitOpen``: open (or forced open) and no trial is due yet. No actor hop.
    - False: a trial may be due (half-open, or open past ``retry_at``): ask the actor for a
      ``Permit``. ``admit_call`` does all of this.

    The view may lag the actor by the messages in its mailbox; the actor's answer to
    ``Permit`` is authoritative.
    """

    __slots__ = (
        "_due_at",
        "connecting",
        "dropped_outcomes",
        "name",
        "passthrough",
        "reason",
        "retry_at",
        "slow_call_seconds",
        "state",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.state: str = CLOSED
        self.reason = "initial"
        self.retry_at: float | None = None
        #: (when it began, its connect_timeout) of the connection attempt under way while the
        #: connection is down (`BreakerCore.connecting`); None otherwise.
        self.connecting: tuple[float, float | None] | None = None
        self._due_at: float | None = None
        self.passthrough = True
        self.slow_call_seconds: float | None = None
        #: Outcome reports dropped because the actor's mailbox was full or it was down.
        self.dropped_outcomes = 0

    def __repr__(self) -> str:
        return f"<BreakerView {self.name} {self.state}>"

    def publish_from(self, core: BreakerCore) -> None:
        """Copy the core's state (actor side)."""
        state = core.state
        self.state = state
        self.reason = core.reason
        self.retry_at = core.retry_at
        self.connecting = core.connecting
        self._due_at = core.due_at
        self.passthrough = state == CLOSED or state == DISABLED
        self.slow_call_seconds = core.policy.slow_call_seconds

    def admit(self, now: float | None = None) -> bool:
        """True: call now, no permit needed. False: ask for a ``Permit``. Or ``CircuitOpen``."""
        if self.passthrough:
            return True
        state = self.state
        if state == HALF_OPEN or state == CLOSED:  # closed: failures not counted yet
            return False
        if now is None:
            now = trio.current_time()
        due = self._due_at
        if due is not None and now >= due:
            return False
        raise _refusal(
            self.name,
            self.state,
            self.reason,
            self.retry_at,
            now,
            timed=due is not None,
            connecting=self.connecting,
        )


async def admit_call(view: BreakerView, ref: Ref[BreakerMessage], *, timeout: float = 5.0) -> bool:
    """Admit one call through the breaker, hopping to the actor only when a trial may be due.

    Returns True when the call holds a half-open trial permit (report its outcome, whatever
    it is: an ignored outcome hands the permit back). Raises ``CircuitOpen``, or the ask's
    ``DeadlineExceeded``/``ActorDown`` when the breaker actor cannot answer.
    """
    if view.passthrough or view.admit():
        return False
    granted: PermitGranted = await ref.ask(Permit(), timeout)
    return granted.trial


CONTROL_SLOTS: Final = 16
"""Mailbox slots outcome reports leave free, so that ``ConnectionUp``/``ConnectionDown`` (sent
without waiting) are never crowded out by a burst of failures."""


def report_outcome(view: BreakerView, ref: Ref[BreakerMessage], outcome: CallOutcome) -> bool:
    """Send one outcome report without ever blocking; a full or dead mailbox drops it (it
    leaves `CONTROL_SLOTS` free).

    An outcome that cannot change the state (a success that is not slow, or anything the
    breaker ignores, while it is closed) is posted: the actor takes it, in order, with the
    next message that wakes it. Anything else is told at once.

    Returns False (and counts ``view.dropped_outcomes``) when it was dropped.
    """
    try:
        if view.state != CLOSED:
            ref.tell_nowait(outcome, keep_free=CONTROL_SLOTS)
        elif outcome.outcome in BREAKER_FAILURES or _slow(view, outcome):
            ref.tell_nowait(outcome, keep_free=CONTROL_SLOTS)
            # It may trip the breaker once counted: until the actor has taken its mailbox,
            # admissions ask it (in order, after this report) instead of reading "closed".
            view.passthrough = False
        else:
            ref.post(outcome, keep_free=CONTROL_SLOTS)
    except (Overloaded, ActorDown):
        view.dropped_outcomes += 1
        return False
    return True


def _slow(view: BreakerView, outcome: CallOutcome) -> bool:
    threshold = view.slow_call_seconds
    return outcome.slow or (threshold is not None and outcome.duration >= threshold)


# ---------------------------------------------------------------------------------------------
# The actor


async def breaker_actor(
    mailbox: Mailbox[BreakerMessage],
    policy: BreakerPolicy,
    view: BreakerView,
    name: str,
    *,
    permit_lease: float = DEFAULT_PERMIT_LEASE,
) -> None:
    """Own one ``BreakerCore``: answer permits, count outcomes, keep ``view`` current.

    Guarantees:

    - Each incarnation starts closed (disabled when ``policy.enabled`` is false) and writes
      that into ``view`` before handling any message, so a restarted breaker never leaves a
      stale view behind.
    - Every state change rewrites ``view`` and publishes one ``breaker_state`` event with
      the transition's reason and ``data`` = the ``Transition`` (from, to, reason, at,
      retry_at, counts) plus ``server`` and ``retry_in`` (``retry_at`` in seconds from
      the event; ``inf`` when no trial is coming, None when unknown; JSON writes both
      ``null``, so ``no_trial`` (true) is added for the first).
    - The open -> half_open change happens when its time comes even if nobody asks, and
      lazily on a ``Permit`` that arrives first.
    - Operator and connection messages answer the new ``BreakerSnapshot`` when asked.
    - Returns when the mailbox is stopped and drained.
    """
    core = BreakerCore(policy, name=name, permit_lease=permit_lease)
    view.publish_from(core)
    slow_call_seconds = policy.slow_call_seconds
    receive = mailbox.receive
    while True:
        due = core.due_at
        try:
            if due is None:
                msg, reply = await receive()
            else:
                msg = reply = None
                with trio.move_on_at(due):
                    msg, reply = await receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return
        now = trio.current_time()
        resync = False
        if msg is None:
            core.advance(now)
        elif type(msg) is CallOutcome:
            slow = msg.slow or (slow_call_seconds is not None and msg.duration >= slow_call_seconds)
            core.record(msg.outcome, now, slow=slow, started_at=msg.at - msg.duration, trial=msg.trial)
        elif type(msg) is Permit:
            try:
                trial = core.check(now)
            except CircuitOpen as refused:
                if reply is not None:
                    reply.fail(refused)
            else:
                # A permit whose answer reached nobody (a tell, or an asker that left while
                # it was queued) would block half-open until its lease ran out.
                if (reply is None or not reply.send(PermitGranted(trial=trial))) and trial:
                    core.release_permit()
        elif type(msg) is Snapshot:
            if reply is not None:
                reply.send(core.snapshot(now))
        else:
            resync = True  # e.g. a new reconnect hint changes retry_at without a transition
            if type(msg) is ForceOpen:
                core.force_open(now, msg.reason)
            elif type(msg) is Disable:
                core.disable(now, msg.reason)
            elif type(msg) is Reset:
                core.reset(now)
            elif type(msg) is SetPolicy:
                core.set_policy(now, msg.policy)
                slow_call_seconds = msg.policy.slow_call_seconds
            elif type(msg) is ConnectionDown:
                core.connection_down(now, msg.reason, msg.retry_at)
            elif type(msg) is ConnectionUp:
                core.connection_up(now)
            elif type(msg) is Connecting:
                core.connecting_began(msg.started_at, msg.timeout)
            elif reply is not None:
                reply.fail(TypeError(f"breaker {name!r} does not understand {type(msg).__name__}"))
                continue
            if reply is not None:
                reply.send(core.snapshot(now))
        if resync or core._pending or (not view.passthrough and mailbox.qsize() == 0):
            view.publish_from(core)
            for transition in core.drain_transitions():
                data = msgspec.to_builtins(transition)
                data["server"] = name
                # ``at`` and ``retry_at`` are trio-clock readings, which mean nothing outside
                # this process: the wait also in seconds from the event.
                retry_at = transition.retry_at
                data["retry_in"] = None if retry_at is None else max(0.0, retry_at - transition.at)
                if retry_at == math.inf:  # JSON has no infinity: ``null`` there, as for unknown
                    data["no_trial"] = True
                publish("breaker_state", reason=transition.reason, data=data)


def spawn_breaker(
    nursery: trio.Nursery,
    policy: BreakerPolicy,
    name: str,
    *,
    size: int = 256,
    permit_lease: float = DEFAULT_PERMIT_LEASE,
) -> tuple[Ref[BreakerMessage], BreakerView]:
    """Start a breaker actor in ``nursery`` (tests, benchmarks); return its ``Ref`` and view."""
    view = BreakerView(name)

    async def behaviour(mailbox: Mailbox[BreakerMessage]) -> None:
        await breaker_actor(mailbox, policy, view, name, permit_lease=permit_lease)

    return spawn(nursery, behaviour, name=f"breaker:{name}", size=size), view
