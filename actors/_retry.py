"""The retry policy: full-jitter backoff, a per-server retry budget, and the retry loop.

Retry sits *outside* the breaker: every attempt goes through the breaker and is reported to
it, so the breaker sees each retry as the call it is.

What is retried (``call_with_retry``), each retry budget permitting, within ``max_retries``
and never past the deadline:

- ``ServerUnavailable``, ``ActorDown``: the call never reached the server, so repeating it
  is always safe.
- ``Overloaded`` is not retried: the server's queue is full, and retrying would feed the
  overload it reports. The caller gets it at once (and the breaker counts it).
- ``ServerCrashed``, ``DeadlineExceeded``: the call may have run. Retried only when
  ``safe_after_send`` (see ``is_retry_safe``). (A ``DeadlineExceeded`` with
  ``data["sent"] = False``, a deadline that passed before the call was sent, is raised
  as it is: nothing ran and no time is left.) Otherwise the failure is raised at once, and a
  ``ServerCrashed`` says in its message that the call may or may not have run.
- A ``retry_after`` in a retried failure's data (seconds: the ``Retry-After`` of a 429 or
  503) is the least wait before the retry.
- ``CircuitOpen``: a fast-fail, and it stays one. A new call's first attempt is never
  retried. A call already admitted once (now retrying a failure above) is retried only when
  the refusal names a ``retry_at`` that comes before the deadline *and* within ``max_delay``
  (a connection that is restarting and expected back shortly); a breaker that is open for a minute, forced
  open, or half-open with its trial in flight fails the call at once, with the breaker's own
  message, so an agent can choose something else instead of waiting.
- Anything else (``UnknownTool``, ``InvalidArguments``, ``InvalidResult``, the tool's own
  error, cancellation, non-``Failure`` exceptions) propagates at once (a typed failure gets
  ``data["attempts"]``).

A single-failure exception group is unwrapped before it is classified, and it is the typed
failure itself that is raised; a group holding a ``Cancelled``, several exceptions or no
``Failure`` propagates as it is.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, TypeVar

import trio

from protocol import (
    ActorDown,
    CircuitOpen,
    DeadlineExceeded,
    Failure,
    RetryPolicy,
    ServerCrashed,
    ServerUnavailable,
    ServerSpec,
    ToolSpec,
)

__all__ = [
    "NEVER_SENT",
    "MAY_HAVE_RUN",
    "RetryBudget",
    "backoff_delay",
    "call_with_retry",
    "is_retry_safe",
    "retry_safe_after_send",
]

T = TypeVar("T")

#: Failures of calls that never reached the server: always safe to repeat.
NEVER_SENT: Final = (ServerUnavailable, ActorDown)
#: Failures of calls that may have run on the server: repeated only when the tool is safe.
MAY_HAVE_RUN: Final = (ServerCrashed, DeadlineExceeded)

_MAY_OR_MAY_NOT: Final = "may or may not have run"


class _Uniform(Protocol):
    def random(self) -> float: ...


def backoff_delay(policy: RetryPolicy, attempt: int, uniform: float) -> float:
    """The wait before retry ``attempt`` (0-based), with full jitter.

    ``uniform * min(max_delay, initial_delay * exponential_base**attempt)``, ``uniform`` a
    draw from U[0, 1). Never negative, never above ``max_delay``, never overflows.
    """
    try:
        ceiling = policy.initial_delay * policy.exponential_base ** max(0, attempt)
    except OverflowError:
        ceiling = math.inf
    return uniform * min(policy.max_delay, ceiling)


class RetryBudget:
    """A per-server cap on retries: at most ``ratio`` of the calls of the last ``window`` s.

    ``note_call`` counts a call (its first attempt only; retries are not calls), and
    ``try_spend`` takes one retry when the budget allows it. The ratio is applied to
    ``max(calls, min_calls)``, so a quiet server can still retry a lone failure: with the
    defaults (ratio 0.2, ``min_calls`` 10) at least 2 retries per window are always allowed,
    while a storm of failures is capped at 20 % extra load. Times are trio-clock seconds
    passed in, so the budget is pure and MockClock-friendly.
    """

    def __init__(self, ratio: float = 0.2, window: float = 10.0, *, min_calls: int = 10) -> None:
        if ratio < 0 or window <= 0 or min_calls < 0:
            raise ValueError("retry budget: ratio >= 0, window > 0, min_calls >= 0")
        self.ratio = ratio
        self.window = window
        self.min_calls = min_calls
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()
        #: Retries refused because the budget was spent.
        self.refused = 0

    @classmethod
    def from_policy(cls, policy: RetryPolicy, *, min_calls: int = 10) -> RetryBudget:
        return cls(policy.budget_ratio, policy.budget_window, min_calls=min_calls)

    def _prune(self, now: float) -> None:
        horizon = now - self.window
        for stamps in (self._calls, self._retries):
            while stamps and stamps[0] <= horizon:
                stamps.popleft()

    def note_call(self, now: float) -> None:
        self._prune(now)
        self._calls.append(now)

    def allowed(self, now: float) -> int:
        """How many retries the current window allows in all."""
        self._prune(now)
        return int(self.ratio * max(len(self._calls), self.min_calls))

    def try_spend(self, now: float) -> bool:
        """Take one retry if the window has room; count a refusal otherwise."""
        if len(self._retries) < self.allowed(now):
            self._retries.append(now)
            return True
        self.refused += 1
        return False


def is_retry_safe(
    *,
    reached_server: bool,
    annotations_retry_safe: bool,
    trust_annotations: bool,
    listed_retry_safe: bool,
) -> bool:
    """May a failed call be repeated?

    A call that never reached the server: always. One that reached it (or may have): only
    when the operator said so, either by listing the tool in ``retry_safe_tools``
    (``listed_retry_safe``) or by trusting this server's annotations (``trust_annotations``)
    while the tool is annotated ``readOnlyHint`` or ``idempotentHint``
    (``annotations_retry_safe``). Annotations are hints from the server; an absent hint is
    false.
    """
    if not reached_server:
        return True
    return listed_retry_safe or (trust_annotations and annotations_retry_safe)


def retry_safe_after_send(spec: ServerSpec, tool: str, tool_spec: ToolSpec | None = None) -> bool:
    """``is_retry_safe`` for a call that reached ``spec``'s server: ``safe_after_send``."""
    return is_retry_safe(
        reached_server=True,
        annotations_retry_safe=tool_spec is not None and tool_spec.retry_safe,
        trust_annotations=spec.trust_annotations,
        listed_retry_safe=tool in spec.retry_safe_tools,
    )


def _single_failure(exc: BaseException) -> Failure | None:
    """The one ``Failure`` ``exc`` is or wraps (single-leaf groups only), else None."""
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc if isinstance(exc, Failure) else None


def _amend(failure: Failure, text: str, **data: object) -> None:
    """Add ``text`` to the failure's message and ``data`` to its data, in place."""
    if text and text not in failure.message:
        failure.message = f"{failure.message}; {text}"
        failure.args = (failure.message,)
    failure.data.update(data)


async def call_with_retry(
    attempt_fn: Callable[[int], Awaitable[T]],
    *,
    policy: RetryPolicy,
    budget: RetryBudget,
    deadline: float,
    safe_after_send: bool | Callable[[], bool],
    rng: _Uniform | None = None,
    on_attempt: Callable[[int, Failure, float], None] | None = None,
    now: float | None = None,
) -> T:
    """Run ``attempt_fn(1)``, ``attempt_fn(2)``, ... until one returns or retrying must stop.

    Guarantees:

    - At most ``1 + policy.max_retries`` attempts; one ``budget.note_call`` per call and one
      ``budget.try_spend`` per retry (a refusal ends the retries).
    - Waits ``backoff_delay(policy, n, rng.random())`` before retry ``n + 1``, and never
      sleeps past ``deadline`` (trio clock): when the next wait would reach it, the last
      failure is raised instead.
    - The failure raised when retrying stops is the last attempt's own typed failure (the
      same object, traceback intact), with ``data["attempts"]`` set. A ``ServerCrashed`` or
      ``DeadlineExceeded`` that was not retried because the call may have run says so in its
      message ("... may or may not have run ...").
    - When a retry is refused by an open circuit, the failure that caused the retry is
      raised (its message says the retry was refused), not the refusal. And once the call
      may have run (a retried ``ServerCrashed``/``DeadlineExceeded``), that failure is what
      is raised in the end, whatever stopped the retries, so the caller always learns the
      call may have run.
    - ``on_attempt(attempt, failure, delay)`` is called before each retry's wait.
    - ``now`` (trio clock, default: read it) is when the call started, for the budget.
    - ``safe_after_send`` may be a function: it is called only once a failure after the
      call may have run needs the answer.
    - Cancellation propagates at once; the budget is not charged for it.
    """
    budget.note_call(trio.current_time() if now is None else now)
    # The first attempt carries none of the retry machinery: most calls end here.
    try:
        return await attempt_fn(1)
    except BaseException as exc:
        failure = _single_failure(exc)
        if failure is None:
            raise
    return await _retry(
        attempt_fn,
        failure,
        policy=policy,
        budget=budget,
        deadline=deadline,
        safe_after_send=safe_after_send,
        rng=rng,
        on_attempt=on_attempt,
    )


async def _retry(
    attempt_fn: Callable[[int], Awaitable[T]],
    failure: Failure,
    *,
    policy: RetryPolicy,
    budget: RetryBudget,
    deadline: float,
    safe_after_send: bool | Callable[[], bool],
    rng: _Uniform | None,
    on_attempt: Callable[[int, Failure, float], None] | None,
) -> T:
    """Decide about ``failure`` of attempt 1, and go on retrying (see `call_with_retry`)."""
    draw = (rng or random).random
    attempt = 1
    previous: Failure | None = None  # the last failure that led to a retry
    first_risky: Failure | None = None  # the first failure after which the call may have run

    def give_up(failure: Failure, text: str = "", **data: object) -> Failure:
        """What to raise: a later failure must not hide that the call may already have run."""
        if first_risky is not None and first_risky is not failure and not isinstance(failure, MAY_HAVE_RUN):
            _amend(first_risky, f"retrying it failed: {failure.message}", retry_failure=failure.kind, **data)
            return first_risky
        _amend(failure, text, **data)
        return failure

    while True:
        # Decide whether and when to retry ``failure``.
        failure.data["attempts"] = attempt
        now = trio.current_time()
        if isinstance(failure, DeadlineExceeded) and failure.data.get("sent") is False:
            raise give_up(failure)  # the deadline passed before it was sent: nothing ran, no time left
        if isinstance(failure, NEVER_SENT):
            wait = backoff_delay(policy, attempt - 1, draw())
        elif isinstance(failure, MAY_HAVE_RUN):
            if callable(safe_after_send):
                safe_after_send = safe_after_send()
            if not safe_after_send:
                said = f"the call was in flight, so it {_MAY_OR_MAY_NOT}; "
                if _MAY_OR_MAY_NOT in failure.message:
                    said = ""  # it says so already
                _amend(
                    failure,
                    f"{said}it was not retried because the tool is not marked retry-safe "
                    "(readOnlyHint/idempotentHint on a trusted server, or retry_safe_tools)",
                    retried=False,
                )
                raise failure
            first_risky = first_risky or failure
            wait = backoff_delay(policy, attempt - 1, draw())
        elif isinstance(failure, CircuitOpen):
            retry_at = failure.data.get("retry_at")
            if (
                attempt == 1  # a new call fails fast: that is what the breaker is for
                or not isinstance(retry_at, (int, float))
                or retry_at >= deadline
                or retry_at - now > policy.max_delay
            ):
                if previous is not None:  # what went wrong first says more than the refusal
                    raise give_up(previous, f"a retry was refused: {failure.message}", retry_refused=failure.kind)
                raise failure
            wait = max(retry_at - now, backoff_delay(policy, attempt - 1, draw()))
        else:
            raise give_up(failure)
        asked = failure.data.get("retry_after")  # the server's own Retry-After, in seconds
        if isinstance(asked, (int, float)) and asked > wait:
            wait = asked
        if attempt > policy.max_retries:
            raise give_up(failure)
        if now + wait >= deadline:
            raise give_up(failure, retry_stopped="deadline")
        if not budget.try_spend(now):
            raise give_up(failure, retry_stopped="retry budget spent")
        if on_attempt is not None:
            on_attempt(attempt, failure, wait)
        await trio.sleep(wait)
        attempt += 1
        if not isinstance(failure, CircuitOpen):
            previous = failure
        try:
            return await attempt_fn(attempt)
        except BaseException as exc:
            next_failure = _single_failure(exc)
            if next_failure is None:
                raise
        failure = next_failure
