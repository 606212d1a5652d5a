"""The retry policy: full jitter, the budget, what is safe to repeat, and the deadline.

Waits run under pytest-trio's ``autojump_clock``: no test sleeps for real.
"""

from __future__ import annotations

import random

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from actors import Mailbox
from actors._retry import RetryBudget, backoff_delay, call_with_retry, is_retry_safe, retry_safe_after_send
from protocol import (
    ActorDown,
    CircuitOpen,
    DeadlineExceeded,
    InvalidArguments,
    Overloaded,
    RetryPolicy,
    ServerCrashed,
    ServerSpec,
    ServerUnavailable,
    ToolAnnotations,
    ToolSpec,
    UnknownTool,
)

POLICY = RetryPolicy(max_retries=3, initial_delay=1.0, max_delay=10.0, exponential_base=2.0)


def roomy_budget() -> RetryBudget:
    return RetryBudget(ratio=1.0, window=10.0, min_calls=1000)


class Script:
    """An ``attempt_fn`` that raises the scripted failures in turn, then returns "ok"."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.attempts: list[tuple[int, float]] = []

    async def __call__(self, attempt: int) -> str:
        self.attempts.append((attempt, trio.current_time()))
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


async def run(script, *, safe_after_send=False, deadline=None, policy=POLICY, budget=None, rng=None, **kw):
    if deadline is None:
        deadline = trio.current_time() + 1000
    return await call_with_retry(
        script,
        policy=policy,
        budget=budget or roomy_budget(),
        deadline=deadline,
        safe_after_send=safe_after_send,
        rng=rng or random.Random(7),
        **kw,
    )


# --- backoff -----------------------------------------------------------------------------------


@given(
    attempt=st.integers(min_value=0, max_value=5000),
    uniform=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    initial=st.floats(min_value=0.001, max_value=5.0),
    cap=st.floats(min_value=0.01, max_value=100.0),
    base=st.floats(min_value=1.0, max_value=10.0),
)
def test_backoff_is_full_jitter_under_the_exponential_ceiling(attempt, uniform, initial, cap, base):
    policy = RetryPolicy(initial_delay=initial, max_delay=cap, exponential_base=base)
    delay = backoff_delay(policy, attempt, uniform)
    assert 0.0 <= delay <= cap
    if attempt < 50:
        assert delay == pytest.approx(uniform * min(cap, initial * base**attempt))


def test_backoff_examples():
    assert backoff_delay(POLICY, 0, 0.5) == 0.5
    assert backoff_delay(POLICY, 2, 0.5) == 2.0
    assert backoff_delay(POLICY, 10, 0.999) == pytest.approx(9.99)
    assert backoff_delay(POLICY, 3, 0.0) == 0.0


# --- the budget ------------------------------------------------------------------------------


def test_budget_allows_a_lone_retry_on_a_quiet_server():
    budget = RetryBudget(ratio=0.2, window=10.0, min_calls=10)
    budget.note_call(0.0)
    assert budget.try_spend(0.0) and budget.try_spend(0.1)  # 0.2 * max(1, 10) = 2
    assert not budget.try_spend(0.2)
    assert budget.refused == 1


def test_budget_scales_with_calls_and_forgets_old_ones():
    budget = RetryBudget(ratio=0.2, window=10.0, min_calls=10)
    for i in range(50):
        budget.note_call(i * 0.1)
    assert sum(budget.try_spend(5.0) for _ in range(20)) == 10
    assert not budget.try_spend(9.0)
    # Ten seconds later the calls and the retries have left the window.
    assert budget.allowed(16.0) == 2
    assert budget.try_spend(16.0)


def test_budget_from_policy():
    budget = RetryBudget.from_policy(RetryPolicy(budget_ratio=0.5, budget_window=3.0))
    assert (budget.ratio, budget.window) == (0.5, 3.0)


async def test_the_budget_stops_a_retry_storm(autojump_clock):
    """100 concurrent calls against a dead server: at most 20 % extra attempts."""
    budget = RetryBudget(ratio=0.2, window=10.0, min_calls=10)
    attempts = 0

    async def dead(attempt: int) -> None:
        nonlocal attempts
        attempts += 1
        raise ServerUnavailable("server 's' is restarting")

    async def one_call() -> None:
        with pytest.raises(ServerUnavailable):
            await run(dead, budget=budget, rng=random.Random())

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(one_call)
    assert attempts <= 100 + 20
    assert budget.refused > 0


# --- what is safe to repeat --------------------------------------------------------------------


@pytest.mark.parametrize("annotated", [True, False])
@pytest.mark.parametrize("trusted", [True, False])
@pytest.mark.parametrize("listed", [True, False])
def test_retry_safety_rule(annotated, trusted, listed):
    assert is_retry_safe(
        reached_server=False, annotations_retry_safe=annotated, trust_annotations=trusted, listed_retry_safe=listed
    )
    assert is_retry_safe(
        reached_server=True, annotations_retry_safe=annotated, trust_annotations=trusted, listed_retry_safe=listed
    ) == (listed or (annotated and trusted))


def test_retry_safe_after_send_reads_the_spec_and_the_tool():
    read_only = ToolSpec(name="search", annotations=ToolAnnotations(readOnlyHint=True))
    idempotent_false = ToolSpec(name="write", annotations=ToolAnnotations(idempotentHint=False))
    trusting = ServerSpec(name="s", command="x", retry_safe_tools=["write"])
    wary = ServerSpec(name="s", command="x", trust_annotations=False)
    assert retry_safe_after_send(trusting, "search", read_only)
    assert retry_safe_after_send(trusting, "write", idempotent_false)  # listed
    assert not retry_safe_after_send(wary, "search", read_only)
    assert not retry_safe_after_send(trusting, "other", None)


# --- the loop ------------------------------------------------------------------------------------


async def test_never_sent_failures_are_retried(autojump_clock):
    script = Script(ServerUnavailable("down"), ActorDown("gone"))
    assert await run(script) == "ok"
    assert [a for a, _ in script.attempts] == [1, 2, 3]


async def test_overloaded_is_not_retried(autojump_clock):
    script = Script(Overloaded("full"))
    with pytest.raises(Overloaded):
        await run(script)
    assert [a for a, _ in script.attempts] == [1]


async def test_waits_are_full_jitter_backoff(autojump_clock):
    script = Script(*(ServerUnavailable("down") for _ in range(3)))
    delays = []
    await run(script, rng=random.Random(3), on_attempt=lambda n, f, d: delays.append(d))
    times = [t for _, t in script.attempts]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps == pytest.approx(delays)
    expected = random.Random(3)
    assert delays == pytest.approx([backoff_delay(POLICY, n, expected.random()) for n in range(3)])
    for n, gap in enumerate(gaps):
        assert 0 <= gap <= min(10.0, 2.0**n)


async def test_exhausted_retries_raise_the_last_failure_itself(autojump_clock):
    failures = [ServerUnavailable(f"down {i}") for i in range(10)]
    script = Script(*failures)
    with pytest.raises(ServerUnavailable) as raised:
        await run(script)
    assert raised.value is failures[3]  # 1 attempt + 3 retries
    assert raised.value.data["attempts"] == 4


async def test_calls_to_a_dead_actor_each_get_their_own_failure(autojump_clock):
    """A dead actor raised one shared ``ActorDown`` for every ask, and the retry loop amends
    the failure it raises in place (``data["attempts"]``, why it stopped): one call's
    amendments showed up in every other call's failure. Now each call's failure is its own."""
    mailbox = Mailbox("gone", 8)
    mailbox.close("stopped")

    async def ask(attempt):
        return await mailbox.ref.ask("call", 1)

    with pytest.raises(ActorDown) as first:
        await run(ask)
    with pytest.raises(ActorDown) as second:
        await run(ask, budget=RetryBudget(ratio=0.0, window=10.0, min_calls=0))
    assert first.value is not second.value
    assert first.value.data == {"actor": "gone", "attempts": 4}
    assert second.value.data == {"actor": "gone", "attempts": 1, "retry_stopped": "retry budget spent"}


async def test_the_deadline_is_never_crossed(autojump_clock):
    policy = RetryPolicy(max_retries=1000, initial_delay=0.5, max_delay=2.0)
    for seed in range(30):
        start = trio.current_time()
        deadline = start + 3.7
        script = Script(*(ServerUnavailable(f"down {i}") for i in range(1000)))
        with pytest.raises(ServerUnavailable) as raised:
            await run(script, policy=policy, deadline=deadline, rng=random.Random(seed))
        assert trio.current_time() < deadline
        assert all(t < deadline for _, t in script.attempts)
        assert raised.value.data["retry_stopped"] == "deadline"


async def test_a_passed_deadline_stops_at_once(autojump_clock):
    script = Script(ServerUnavailable("down"))
    with pytest.raises(ServerUnavailable):
        await run(script, deadline=trio.current_time())
    assert len(script.attempts) == 1


async def test_unsafe_server_crashed_is_not_retried_and_says_it_may_have_run(autojump_clock):
    script = Script(ServerCrashed("server 's' exited during the call"))
    with pytest.raises(ServerCrashed) as raised:
        await run(script, safe_after_send=False)
    assert len(script.attempts) == 1
    assert "may or may not have run" in raised.value.message
    assert "may or may not have run" in str(raised.value)
    assert raised.value.data["retried"] is False
    assert raised.value.to_error().data["kind"] == "ServerCrashed"


async def test_a_failure_that_already_says_it_may_have_run_does_not_say_it_twice(autojump_clock):
    script = Script(ServerCrashed("server 's' died while the call was in flight; the call may or may not have run"))
    with pytest.raises(ServerCrashed) as raised:
        await run(script, safe_after_send=False)
    assert raised.value.message.count("may or may not have run") == 1
    assert raised.value.message.endswith("it was not retried because the tool is not marked retry-safe "
                                         "(readOnlyHint/idempotentHint on a trusted server, or retry_safe_tools)")


async def test_unsafe_deadline_exceeded_is_not_retried(autojump_clock):
    script = Script(DeadlineExceeded("no answer within 5 s"))
    with pytest.raises(DeadlineExceeded, match="may or may not have run"):
        await run(script, safe_after_send=False)
    assert len(script.attempts) == 1


async def test_safe_after_send_failures_are_retried(autojump_clock):
    script = Script(ServerCrashed("crashed"), DeadlineExceeded("slow"))
    assert await run(script, safe_after_send=True) == "ok"
    assert len(script.attempts) == 3


@pytest.mark.parametrize("failure", [UnknownTool("no such tool"), InvalidArguments("bad"), ValueError("bug")])
async def test_other_failures_propagate_at_once(failure, autojump_clock):
    script = Script(failure)
    with pytest.raises(type(failure)):
        await run(script, safe_after_send=True)
    assert len(script.attempts) == 1


async def test_a_new_call_refused_by_the_circuit_fails_fast(autojump_clock):
    now = trio.current_time()
    script = Script(CircuitOpen("open", retry_at=now + 1.5, retry_in=1.5))
    with pytest.raises(CircuitOpen):
        await run(script)
    assert len(script.attempts) == 1


async def test_an_admitted_call_waits_for_a_near_trial_only(autojump_clock):
    now = trio.current_time()
    script = Script(ServerUnavailable("down"), CircuitOpen("open", retry_at=now + 1.5, retry_in=1.5))
    assert await run(script) == "ok"
    assert script.attempts[2][1] >= now + 1.5  # waited for the trial time

    for refused in (
        CircuitOpen("open for a minute", retry_at=now + 60.0, retry_in=60.0),  # beyond max_delay
        CircuitOpen("forced open"),  # no trial time at all
        CircuitOpen("half-open, trial in flight", state="half_open"),
    ):
        script = Script(ServerUnavailable("down"), refused)
        with pytest.raises(ServerUnavailable, match="a retry was refused"):
            await run(script)
        assert len(script.attempts) == 2

    now = trio.current_time()
    script = Script(ServerUnavailable("down"), CircuitOpen("open", retry_at=now + 2.5))  # after the deadline
    with pytest.raises(ServerUnavailable, match="a retry was refused"):
        await run(script, deadline=now + 2.0)
    assert len(script.attempts) == 2


async def test_a_single_failure_group_is_unwrapped(autojump_clock):
    script = Script(ExceptionGroup("nursery", [ServerUnavailable("down")]))
    assert await run(script) == "ok"
    crashed = ServerCrashed("crashed")
    script = Script(ExceptionGroup("nursery", [crashed]))
    with pytest.raises(ServerCrashed) as raised:
        await run(script)
    assert raised.value is crashed


async def test_cancellation_propagates_and_costs_no_budget(autojump_clock):
    budget = RetryBudget(ratio=0.2, window=10.0, min_calls=10)

    async def hang(attempt: int) -> None:
        await trio.sleep_forever()

    with trio.move_on_after(5) as scope:
        await run(hang, budget=budget)
    assert scope.cancelled_caught
    assert budget.refused == 0 and len(budget._retries) == 0


async def test_cancelled_during_the_wait(autojump_clock):
    script = Script(*(ServerUnavailable("down") for _ in range(5)))
    policy = RetryPolicy(max_retries=5, initial_delay=100.0, max_delay=100.0)
    rng = random.Random(1)
    assert backoff_delay(policy, 0, random.Random(1).random()) > 1  # the first wait outlasts the scope
    with trio.move_on_after(1) as scope:
        await run(script, policy=policy, rng=rng)
    assert scope.cancelled_caught and len(script.attempts) == 1
