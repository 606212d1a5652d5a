"""The circuit breaker: its state machine driven through the actor under MockClock.

Every test that waits uses pytest-trio's ``autojump_clock``: no test sleeps for real and
none asserts wall time (``bench/breaker_check.py`` measures the fast path).
"""

from __future__ import annotations

import sys

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from actors import Mailbox
from actors._breaker import (
    BreakerCore,
    BreakerSnapshot,
    BreakerView,
    CONTROL_SLOTS,
    ConnectionDown,
    ConnectionUp,
    Disable,
    ForceOpen,
    Permit,
    PermitGranted,
    Reset,
    SetPolicy,
    Snapshot,
    admit_call,
    report_outcome,
    spawn_breaker,
)
from actors._events import _BUS, EventBus
from conftest import drain
from protocol import BreakerPolicy, CallOutcome, CircuitOpen, Overloaded

# A policy where only the rule under test can trip.
NO_RATE = dict(window=100, min_calls=1000)


def policy(**overrides) -> BreakerPolicy:
    fields = dict(failure_threshold=3, open_seconds=10.0, max_open_seconds=600.0, **NO_RATE)
    fields.update(overrides)
    return BreakerPolicy(**fields)


def outcome(
    kind: str, *, duration: float = 0.0, slow: bool = False, started: float | None = None, trial: bool = False
) -> CallOutcome:
    """A report of a call that finished now (and started ``duration`` ago, or at ``started``);
    ``trial``: it held a half-open trial permit."""
    now = trio.current_time()
    if started is not None:
        duration = now - started
    return CallOutcome(server="s", tool="t", outcome=kind, duration=duration, at=now, slow=slow, trial=trial)


async def report(ref, *kinds: str, **kw) -> BreakerSnapshot:
    """Tell the outcomes, then ask a snapshot: the mailbox is FIFO, so they are all counted."""
    for kind in kinds:
        ref.tell_nowait(outcome(kind, **kw))
    return await ref.ask(Snapshot(), 1)


@pytest.fixture
async def breaker(nursery):
    """A factory: ``ref, view = breaker(**policy_overrides)``."""

    def make(**overrides):
        return spawn_breaker(nursery, policy(**overrides), "s")

    return make


async def trip(ref, n: int = 3) -> BreakerSnapshot:
    snap = await report(ref, *["ServerCrashed"] * n)
    assert snap.state == "open"
    return snap


# --- tripping --------------------------------------------------------------------------------


async def test_consecutive_failures_trip_at_the_threshold(breaker, autojump_clock):
    ref, view = breaker()
    snap = await report(ref, "ServerCrashed", "DeadlineExceeded")
    assert snap.state == "closed" and snap.counts.consecutive_failures == 2
    assert view.admit() is True
    snap = await report(ref, "ServerUnavailable")
    assert snap.state == "open"
    assert snap.reason == "3 consecutive failures"
    assert view.state == "open" and not view.passthrough


async def test_a_success_breaks_the_run_of_failures(breaker, autojump_clock):
    ref, view = breaker()
    snap = await report(ref, "ServerCrashed", "ServerCrashed", "success", "ServerCrashed", "ServerCrashed")
    assert snap.state == "closed" and snap.counts.consecutive_failures == 2


async def test_failure_rate_over_the_window_trips_once_min_calls_are_in(breaker, autojump_clock):
    ref, view = breaker(failure_threshold=100, window=10, min_calls=10, failure_rate=0.5)
    snap = await report(ref, *["success", "ServerUnavailable"] * 4, "success")  # 9 calls, 4 failed
    assert snap.state == "closed" and snap.counts.window_calls == 9
    snap = await report(ref, "ServerUnavailable")  # 10 calls, 5 failed: 50 %
    assert snap.state == "open"
    assert snap.reason == "failure rate 50% over the last 10 calls"
    assert snap.counts.window_failures == 5 and snap.counts.failure_rate == 0.5


async def test_the_window_slides_old_failures_out(breaker, autojump_clock):
    ref, view = breaker(failure_threshold=100, window=10, min_calls=10, failure_rate=0.5)
    snap = await report(ref, *["ServerCrashed", "success"] * 2, *["success"] * 6)  # 2 of 10
    assert snap.counts.window_failures == 2
    snap = await report(ref, *["success"] * 4)  # the two failures slid out
    assert snap.state == "closed"
    assert snap.counts.window_calls == 10 and snap.counts.window_failures == 0


async def test_slow_call_rate_trips_only_when_slow_call_seconds_is_set(breaker, autojump_clock):
    ref, view = breaker(failure_threshold=100, window=4, min_calls=4, slow_call_seconds=1.0, slow_call_rate=0.5)
    snap = await report(ref, "success", duration=2.0)  # slow by its duration
    snap = await report(ref, "success", "success")
    assert snap.state == "closed" and snap.counts.window_slow == 1
    snap = await report(ref, "success", slow=True)  # slow by its report's flag: 2 of 4
    assert snap.state == "open"
    assert snap.reason.startswith("slow-call rate 50% over the last 4 calls")

    ref2, _ = breaker(failure_threshold=100, window=4, min_calls=4, slow_call_rate=0.5)  # no slow_call_seconds
    snap = await report(ref2, *["success"] * 8, duration=30.0, slow=True)
    assert snap.state == "closed" and snap.counts.window_slow == 0


# --- open, half-open, permits ----------------------------------------------------------------


async def test_circuit_open_says_why_and_when_the_next_trial_is(breaker, autojump_clock):
    ref, view = breaker(open_seconds=30.0)
    await trip(ref)
    opened = trio.current_time()
    await trio.sleep(12)
    with pytest.raises(CircuitOpen) as refused:
        view.admit()
    error = refused.value
    assert "circuit for 's' is open (3 consecutive failures)" in error.message
    assert "next trial in 18 s" in error.message
    assert error.data["retry_at"] == pytest.approx(opened + 30)
    assert error.data["retry_in"] == pytest.approx(18)
    assert error.data["state"] == "open"
    # The actor says the same when asked directly.
    with pytest.raises(CircuitOpen, match="next trial in 18 s"):
        await ref.ask(Permit(), 1)


async def test_open_becomes_half_open_when_its_time_is_over_even_without_calls(breaker, autojump_clock):
    ref, view = breaker(open_seconds=10.0)
    await trip(ref)
    await trio.sleep(9.9)
    assert view.state == "open"
    await trio.sleep(0.2)
    assert view.state == "half_open"
    assert view.admit() is False  # ask the actor for a permit


async def test_half_open_success_closes(breaker, autojump_clock):
    ref, view = breaker(open_seconds=10.0)
    await trip(ref)
    await trio.sleep(10)
    assert await admit_call(view, ref) is True  # the trial
    snap = await report(ref, "success", trial=True)
    assert snap.state == "closed" and snap.reason == "trial call succeeded"
    assert snap.counts.consecutive_failures == 0 and snap.counts.window_calls == 0
    assert view.passthrough and await admit_call(view, ref) is False


async def test_half_open_failure_reopens_with_twice_the_open_time(breaker, autojump_clock):
    ref, view = breaker(open_seconds=10.0)
    await trip(ref)
    await trio.sleep(10)
    assert await admit_call(view, ref) is True
    snap = await report(ref, "DeadlineExceeded", trial=True)
    assert snap.state == "open" and snap.reason == "trial call failed (DeadlineExceeded)"
    assert snap.retry_at == pytest.approx(trio.current_time() + 20)
    assert snap.counts.trips == 2 and snap.counts.open_seconds == 20


async def test_a_second_concurrent_trial_is_refused(breaker, autojump_clock):
    ref, view = breaker(open_seconds=10.0, half_open_permits=1)
    await trip(ref)
    await trio.sleep(10)
    assert await admit_call(view, ref) is True
    with pytest.raises(CircuitOpen, match="half-open .*1 trial call in flight.*admitted when a trial call finishes"):
        await admit_call(view, ref)
    await report(ref, "success", trial=True)
    assert await admit_call(view, ref) is False


async def test_half_open_admits_as_many_trials_as_permits(breaker, autojump_clock):
    ref, view = breaker(open_seconds=10.0, half_open_permits=2)
    await trip(ref)
    await trio.sleep(10)
    assert await admit_call(view, ref) is True
    assert await admit_call(view, ref) is True
    with pytest.raises(CircuitOpen, match="2 trial calls in flight"):
        await admit_call(view, ref)


async def test_an_ignored_trial_hands_its_permit_back(breaker, autojump_clock):
    ref, view = breaker(open_seconds=10.0)
    await trip(ref)
    await trio.sleep(10)
    assert await admit_call(view, ref) is True
    snap = await report(ref, "cancelled", trial=True)
    assert snap.state == "half_open" and snap.trials_in_flight == 0
    assert await admit_call(view, ref) is True


async def test_a_refused_calls_report_hands_back_no_permit(breaker, autojump_clock):
    """Every attempt is reported, refused ones too (``CircuitOpen``, ignored): each handed
    back the running trial's permit, so every other call got in as another trial."""
    ref, view = breaker(open_seconds=10.0, half_open_permits=1)
    await trip(ref)
    await trio.sleep(10)
    assert await admit_call(view, ref) is True  # the trial, still running
    for _ in range(3):
        with pytest.raises(CircuitOpen):
            await admit_call(view, ref)
        snap = await report(ref, "CircuitOpen")  # the refused call's report
        assert snap.trials_in_flight == 1
    snap = await report(ref, "ServerCrashed")  # nor does a failure it did not hold a permit for decide
    assert snap.state == "half_open" and snap.trials_in_flight == 1


async def test_a_lost_trial_report_does_not_wedge_half_open(nursery, autojump_clock):
    ref, view = spawn_breaker(nursery, policy(open_seconds=10.0), "s", permit_lease=30.0)
    await trip(ref)
    await trio.sleep(10)
    assert await admit_call(view, ref) is True  # its outcome never arrives
    with pytest.raises(CircuitOpen):
        await admit_call(view, ref)
    await trio.sleep(30)
    assert await admit_call(view, ref) is True


async def test_a_permit_asked_by_a_caller_gone_before_the_answer_goes_back(breaker, autojump_clock):
    """A ``Permit`` ask abandoned while queued (its caller cancelled) used to take the
    half-open trial permit anyway: the answer was dropped and nobody would ever report or
    release it, so every call was refused ("1 trial call in flight") until the permit's
    lease ran out (60 s). Now a permit whose answer did not reach its asker is handed back
    at once."""
    ref, view = breaker(open_seconds=10.0, half_open_permits=1)
    await trip(ref)
    await trio.sleep(10)
    for _ in range(3):
        with trio.CancelScope() as gone:
            gone.cancel()
            await admit_call(view, ref)  # queued, then abandoned
        assert gone.cancelled_caught
    snap = await ref.ask(Snapshot(), 1)
    assert snap.state == "half_open" and snap.trials_in_flight == 0
    assert await admit_call(view, ref) is True  # the next caller is the trial


async def test_a_late_ignored_report_does_not_hand_back_another_callers_permit(nursery, autojump_clock):
    """Once a trial's permit had been forgotten (its lease ran out), the trial's late
    ignored report handed back the oldest permit in flight: another caller's. A third call
    then got in while that trial still ran. Now an ignored report hands back only the
    permit of its own call (the newest granted no later than the call started), if it is
    still held."""
    ref, view = spawn_breaker(nursery, policy(open_seconds=10.0), "s", permit_lease=30.0)
    await trip(ref)
    await trio.sleep(10)
    first_started = trio.current_time()
    assert await admit_call(view, ref) is True  # its report comes only after the lease
    await trio.sleep(30)
    assert await admit_call(view, ref) is True  # the second trial, still running
    snap = await report(ref, "cancelled", trial=True, started=first_started)  # the first's late report
    assert snap.trials_in_flight == 1
    with pytest.raises(CircuitOpen, match="1 trial call in flight"):
        await admit_call(view, ref)


async def test_open_time_doubles_per_consecutive_trip_up_to_the_cap(breaker, autojump_clock):
    ref, view = breaker(open_seconds=10.0, max_open_seconds=25.0)
    await trip(ref)
    seen = []
    for _ in range(4):
        snap = await ref.ask(Snapshot(), 1)
        seen.append(snap.retry_at - snap.last_transition.at)
        await trio.sleep(snap.retry_at - trio.current_time())
        assert await admit_call(view, ref) is True
        await report(ref, "ServerCrashed", trial=True)
    assert seen == [10, 20, 25, 25]


async def test_the_open_time_starts_over_after_a_healthy_closed_window(breaker, autojump_clock):
    ref, view = breaker(open_seconds=10.0, window=5)
    await trip(ref)
    for _ in range(2):  # three consecutive trips: 10 s, 20 s, 40 s; the next would be 80 s
        await trio.sleep(60)
        await admit_call(view, ref)
        await report(ref, "ServerCrashed", trial=True)
    await trio.sleep(60)
    await admit_call(view, ref)
    snap = await report(ref, "success", trial=True)  # the trial closes it
    snap = await report(ref, "success", "success", "success", "success")
    assert snap.state == "closed" and snap.counts.trips == 3 and snap.counts.open_seconds == 80
    snap = await report(ref, "success")  # the fifth (window) success since closing
    assert snap.counts.trips == 0
    snap = await trip(ref)
    assert snap.retry_at - snap.last_transition.at == 10


# --- what counts ------------------------------------------------------------------------------


async def test_ignored_outcomes_never_count_and_tool_error_is_a_success(breaker, autojump_clock):
    ref, view = breaker(failure_threshold=2)
    ignored = ["cancelled", "InvalidArguments", "UnknownTool", "CircuitOpen", "Overloaded", "NoSuchKind"]
    snap = await report(ref, "ServerCrashed", *ignored * 20)
    assert snap.state == "closed"
    assert snap.counts.consecutive_failures == 1 and snap.counts.window_calls == 1
    assert snap.ignored == 120
    snap = await report(ref, "tool_error", "ServerCrashed")
    assert snap.state == "closed" and snap.counts.consecutive_failures == 1
    assert snap.counts.window_calls == 3 and snap.counts.window_failures == 2


async def test_stale_reports_from_before_the_trip_are_dropped(breaker, autojump_clock):
    ref, view = breaker(open_seconds=10.0)
    long_call_started = trio.current_time()
    await trio.sleep(1)
    await trip(ref)
    await trio.sleep(10)
    await admit_call(view, ref)
    await report(ref, "success", trial=True)
    # Calls admitted before the trip time out late: they must not re-trip the fresh breaker.
    snap = await report(ref, *["DeadlineExceeded"] * 5, started=long_call_started)
    assert snap.state == "closed" and snap.stale == 5 and snap.counts.window_calls == 0


@given(st.lists(st.sampled_from(["cancelled", "InvalidArguments", "UnknownTool", "CircuitOpen", "success"])))
def test_without_failures_the_core_never_trips(kinds):
    core = BreakerCore(BreakerPolicy(failure_threshold=1, window=3, min_calls=1, failure_rate=0.01))
    for t, kind in enumerate(kinds):
        core.record(kind, float(t))
        assert core.check(float(t)) is False
    assert core.state == "closed" and core.transition_count == 0


# --- operator and connection ------------------------------------------------------------------


async def test_forced_open_refuses_until_reset_and_ignores_outcomes(breaker, autojump_clock):
    ref, view = breaker(open_seconds=10.0)
    snap = await ref.ask(ForceOpen("maintenance"), 1)
    assert snap.state == "forced_open" and view.state == "forced_open"
    await trio.sleep(3600)  # no timer: it stays forced open
    with pytest.raises(CircuitOpen, match=r"forced open \(maintenance\); no trial until an operator"):
        view.admit()
    with pytest.raises(CircuitOpen):
        await ref.ask(Permit(), 1)
    snap = await report(ref, *["success"] * 3)
    assert snap.state == "forced_open" and snap.counts.window_calls == 0
    snap = await ref.ask(Reset(), 1)
    assert snap.state == "closed" and snap.reason == "reset by operator"
    assert view.admit() is True


async def test_disabled_admits_everything_and_counts_nothing(breaker, autojump_clock):
    ref, view = breaker()
    await trip(ref)
    snap = await ref.ask(Disable(), 1)
    assert snap.state == "disabled" and view.passthrough
    snap = await report(ref, *["ServerCrashed"] * 10)
    assert snap.state == "disabled" and snap.ignored == 10
    assert snap.counts.consecutive_failures == 3  # as it was when disabled: nothing counted since
    assert await admit_call(view, ref) is False
    snap = await ref.ask(Reset(), 1)
    assert snap.state == "closed" and snap.counts.trips == 0


async def test_a_breaker_disabled_in_config_starts_disabled(nursery, autojump_clock):
    ref, view = spawn_breaker(nursery, policy(enabled=False), "s")
    snap = await report(ref, *["ServerCrashed"] * 10)
    assert snap.state == "disabled" and snap.reason == "disabled in config"
    assert view.admit() is True


async def test_a_new_policy_applies_to_the_counts_so_far_and_toggles_the_config_disable(breaker, autojump_clock):
    """A reload's ``SetPolicy``: the counts are kept and judged by the new thresholds from
    the next outcome on; ``enabled`` turns the config's disable on and off, and never lifts
    an operator's."""
    ref, view = breaker()  # failure_threshold 3
    snap = await report(ref, "ServerCrashed", "ServerCrashed")
    assert snap.state == "closed" and snap.counts.consecutive_failures == 2
    await ref.ask(SetPolicy(policy(failure_threshold=5)), 1)
    assert (await report(ref, "ServerCrashed", "ServerCrashed")).state == "closed"  # 4 < 5
    assert (await report(ref, "ServerCrashed")).state == "open"  # the fifth, under the new rule

    snap = await ref.ask(SetPolicy(policy(enabled=False)), 1)
    assert snap.state == "disabled" and snap.reason == "disabled in config" and view.passthrough
    snap = await ref.ask(SetPolicy(policy()), 1)
    assert snap.state == "open"  # back to what its health says
    await ref.ask(Disable("by hand"), 1)
    snap = await ref.ask(SetPolicy(policy(failure_threshold=4)), 1)
    assert snap.state == "disabled" and "by hand" in snap.reason


async def test_a_smaller_window_keeps_only_the_latest_outcomes(breaker, autojump_clock):
    ref, _ = breaker(window=10, min_calls=4, failure_rate=0.5, failure_threshold=100)
    await report(ref, "ServerCrashed", "ServerCrashed", "success", "success", "success")
    snap = await ref.ask(SetPolicy(policy(window=3, min_calls=3, failure_rate=0.5, failure_threshold=100)), 1)
    assert snap.counts.window_calls == 3 and snap.counts.window_failures == 0, snap.counts
    assert (await report(ref, "ServerCrashed")).state == "closed"  # 1 of 3: rate below 0.5
    assert (await report(ref, "ServerCrashed")).state == "open"  # 2 of 3


async def test_reset_from_open_closes_with_fresh_counts(breaker, autojump_clock):
    ref, view = breaker()
    await trip(ref)
    snap = await ref.ask(Reset(), 1)
    assert snap.state == "closed" and snap.counts.trips == 0 and snap.counts.consecutive_failures == 0
    assert view.admit() is True


async def test_connection_down_fails_fast_until_it_is_up(breaker, autojump_clock):
    ref, view = breaker(open_seconds=10.0)
    await report(ref, "ServerCrashed", "ServerCrashed")
    snap = await ref.ask(ConnectionDown("server exited with code 1"), 1)
    assert snap.state == "open" and snap.reason == "connection down: server exited with code 1"
    await trio.sleep(3600)  # no timer runs while the connection is down
    with pytest.raises(CircuitOpen, match="connection down.*next trial when the connection is back") as refused:
        view.admit()
    assert "retry_at" not in refused.value.data
    with pytest.raises(CircuitOpen):
        await ref.ask(Permit(), 1)
    snap = await ref.ask(ConnectionUp(), 1)
    # Closed before: closed again, counts kept, so a server that crashes on every call
    # still reaches its threshold across restarts.
    assert snap.state == "closed" and snap.reason == "connection up"
    assert snap.counts.consecutive_failures == 2
    assert view.admit() is True


async def test_connection_down_can_carry_the_expected_reconnect_time(breaker, autojump_clock):
    ref, view = breaker()
    back = trio.current_time() + 2.0
    await ref.ask(ConnectionDown("restarting", retry_at=back), 1)
    with pytest.raises(CircuitOpen, match=r"connection is back \(expected in 2 s\)") as refused:
        view.admit()
    assert refused.value.data["retry_at"] == back
    await trio.sleep(5)
    with pytest.raises(CircuitOpen):  # a hint, not a timer
        view.admit()


async def test_connection_up_after_a_trip_makes_the_first_call_the_trial(breaker, autojump_clock):
    ref, view = breaker(open_seconds=60.0)
    await trip(ref)
    await ref.ask(ConnectionDown(), 1)
    snap = await ref.ask(ConnectionUp(), 1)
    assert snap.state == "half_open" and view.state == "half_open"
    assert await admit_call(view, ref) is True
    with pytest.raises(CircuitOpen):
        await admit_call(view, ref)


async def test_operator_states_win_over_the_connection(breaker, autojump_clock):
    ref, view = breaker()
    await ref.ask(ForceOpen(), 1)
    await ref.ask(ConnectionDown(), 1)
    snap = await ref.ask(ConnectionUp(), 1)
    assert snap.state == "forced_open"
    await ref.ask(ConnectionDown(), 1)
    snap = await ref.ask(Reset(), 1)
    assert snap.state == "open" and snap.connection_down  # reset cannot bring the server back
    snap = await ref.ask(ConnectionUp(), 1)
    assert snap.state == "closed"


# --- events, view, reports ---------------------------------------------------------------------


async def test_every_state_change_is_published_with_reason_and_counts(autojump_clock):
    bus = EventBus()
    _BUS.set(bus)
    events = bus.subscribe()
    async with trio.open_nursery() as nursery:
        ref, view = spawn_breaker(nursery, policy(open_seconds=10.0), "echo")
        await trip(ref)
        await trio.sleep(10)
        await admit_call(view, ref)
        await report(ref, "success", trial=True)
        nursery.cancel_scope.cancel()
    seen = drain(events)
    assert [(e.data["from"], e.data["to"]) for e in seen] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    opened = seen[0]
    assert opened.kind == "breaker_state" and opened.reason == "3 consecutive failures"
    assert opened.data["server"] == "echo"
    assert opened.data["counts"]["consecutive_failures"] == 3
    assert opened.data["counts"]["window_failures"] == 3 and opened.data["counts"]["window_calls"] == 3
    assert opened.data["retry_at"] == pytest.approx(opened.at + 10)
    assert seen[2].reason == "trial call succeeded"


async def test_snapshot_counts_transitions_and_keeps_the_last(breaker, autojump_clock):
    ref, view = breaker()
    await trip(ref)
    await ref.ask(Reset(), 1)
    snap = await ref.ask(Snapshot(), 1)
    assert snap.transitions == 2
    assert snap.last_transition.from_ == "open" and snap.last_transition.to == "closed"
    assert snap.outcomes == 3


async def test_a_permit_asked_while_closed_is_not_a_trial(breaker, autojump_clock):
    ref, view = breaker()
    assert await ref.ask(Permit(), 1) == PermitGranted(trial=False)


async def test_outcome_reports_never_block_and_count_drops():
    mailbox = Mailbox("breaker:s", size=CONTROL_SLOTS + 1)  # nobody reads it
    view = BreakerView("s")
    ref = mailbox.ref
    now = trio.current_time()
    failure = CallOutcome(server="s", tool="t", outcome="ServerCrashed", duration=0.0, at=now)
    assert report_outcome(view, ref, failure) is True  # told: it takes the one slot not kept free
    assert report_outcome(view, ref, failure) is False
    mailbox.close("gone")
    assert report_outcome(view, ref, failure) is False
    assert view.dropped_outcomes == 2


async def test_reports_to_a_dead_breaker_keep_nothing_alive():
    """Every report to a dead breaker (its server down, each call still reporting) raised,
    and dropped, the same stored ``ActorDown``, whose traceback grew by a few entries per
    report, each pinning a frame and its locals: the report itself, for good. Now the
    dropped report leaves nothing behind."""
    mailbox = Mailbox("breaker:s", size=256)
    view = BreakerView("s")
    view.state = "open"  # every outcome is told, not posted
    mailbox.close("stopped")
    failure = CallOutcome(server="s", tool="t", outcome="ServerCrashed", duration=0.0, at=0.0)
    before = sys.getrefcount(failure)
    for _ in range(1000):
        assert report_outcome(view, mailbox.ref, failure) is False
    assert sys.getrefcount(failure) == before
    assert view.dropped_outcomes == 1000


async def test_a_burst_of_failures_leaves_room_for_connection_messages():
    mailbox = Mailbox("breaker:s", size=256)  # the size ServerHandle uses; nobody reads it
    view = BreakerView("s")
    now = trio.current_time()
    failure = CallOutcome(server="s", tool="t", outcome="ServerCrashed", duration=0.0, at=now)
    accepted = [report_outcome(view, mailbox.ref, failure) for _ in range(300)]
    assert accepted.count(True) == 256 - CONTROL_SLOTS
    for _ in range(CONTROL_SLOTS):  # never dropped: the connection's state must get through
        mailbox.ref.tell_nowait(ConnectionDown(reason="connection down: test"))
    with pytest.raises(Overloaded):
        mailbox.ref.tell_nowait(ConnectionUp())  # the mailbox itself is bounded


async def test_successes_are_posted_in_order_and_dropped_only_when_the_mailbox_is_full():
    mailbox = Mailbox("breaker:s", size=CONTROL_SLOTS + 1)  # nobody reads it
    view = BreakerView("s")
    ref = mailbox.ref
    now = trio.current_time()
    batch = CONTROL_SLOTS + 1  # posted reports go in batches of at most the mailbox size
    reports = [
        CallOutcome(server="s", tool="t", outcome="success", duration=0.0, at=now, attempt=i) for i in range(3 * batch)
    ]
    accepted = [report_outcome(view, ref, r) for r in reports]
    # One batch fills the one slot not kept free, one more waits outside the channel.
    assert accepted == [True] * (2 * batch) + [False] * batch
    assert view.dropped_outcomes == batch
    ref.stop()
    received = [msg.attempt async for msg, _ in mailbox]
    assert received == list(range(2 * batch))  # in order, none lost but the dropped ones


async def test_the_view_of_a_fresh_breaker_admits_without_an_actor(autojump_clock):
    view = BreakerView("s")
    assert view.admit() is True and view.passthrough


async def test_a_call_right_after_failures_waits_for_them_to_be_counted(breaker, autojump_clock):
    """Failure reports reach the actor when it next runs, and the router's view stayed
    ``closed`` meanwhile: back-to-back calls in one task (no checkpoint between a report and
    the next admission) let a call through a breaker their failures had already tripped.
    Now a failure reported while closed makes the next admission ask the actor, which takes
    its mailbox in order; once it has counted everything, admission is one read again."""
    ref, view = breaker(failure_threshold=2)

    def failed() -> None:
        assert report_outcome(view, ref, outcome("ServerCrashed"))

    failed()
    assert not view.passthrough  # not counted yet
    assert await admit_call(view, ref) is False  # counted now: one failure, still closed
    await trio.testing.wait_all_tasks_blocked()
    assert view.passthrough and view.admit() is True
    failed()
    with pytest.raises(CircuitOpen, match="2 consecutive failures"):
        await admit_call(view, ref)
