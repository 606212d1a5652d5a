"""The supervision tree under MockClock: the fault matrix, backoff, reset, intensity, dynamics.

Every test here runs on trio's autojump MockClock, so backoff delays cost no real time.
"""

import itertools
import random

import pytest
import trio

from supervisor import (
    Backoff,
    ChildSpec,
    Intensity,
    Restart,
    Strategy,
    TreeSupervisor,
    SupervisorGaveUp,
)

NO_JITTER = Backoff(min=0.5, max=30.0, jitter=0.0)


class Probe:
    """A scripted child. ``script[i]`` is what incarnation i does; the last entry repeats.

    Modes: ``run`` (ready, then forever), ``crash_before_ready``, ``crash_after_ready``
    (ready, then raise after ``after`` s), ``clean_exit`` (ready, then return after
    ``after`` s), ``hang_in_shutdown`` (ready; ignores stop() and only a cancel ends it).
    """

    def __init__(self, name, *script, after=1.0):
        self.name = name
        self.script = list(script) or ["run"]
        self.after = after if isinstance(after, list) else [after]
        self.starts = 0
        self.cancelled = 0
        self.stop_requests = 0
        self.stopping = trio.Event()

    def stop(self):
        self.stop_requests += 1
        if self.mode != "hang_in_shutdown":
            self.stopping.set()

    async def start(self, *, task_status):
        i = self.starts
        self.starts += 1
        self.mode = self.script[min(i, len(self.script) - 1)]
        self.stopping = trio.Event()
        after = self.after[min(i, len(self.after) - 1)]
        try:
            if self.mode == "crash_before_ready":
                raise RuntimeError(f"{self.name} failed to start")
            task_status.started(self)
            if self.mode == "crash_after_ready":
                await trio.sleep(after)
                raise RuntimeError(f"{self.name} crashed")
            if self.mode == "clean_exit":
                await trio.sleep(after)
                return
            await self.stopping.wait()
        except trio.Cancelled:
            self.cancelled += 1
            raise

    def spec(self, restart=Restart.PERMANENT, backoff=NO_JITTER, shutdown=5.0):
        return ChildSpec(id=self.name, start=self.start, restart=restart, backoff=backoff, shutdown=shutdown)


async def collect(events, into):
    async for event in events:
        into.append(event)


FAULTS = ["crash_before_ready", "crash_after_ready", "clean_exit", "hang_in_shutdown"]


@pytest.mark.parametrize(
    "strategy,restart,fault", list(itertools.product(list(Strategy), list(Restart), FAULTS))
)
async def test_fault_matrix(autojump_clock, strategy, restart, fault):
    a, b, c = Probe("a"), Probe("b", fault, "run"), Probe("c")
    sup = TreeSupervisor("sup", [a.spec(), b.spec(restart, shutdown=3.0), c.spec()], strategy=strategy)
    events = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sup.subscribe(), events)
        await nursery.start(sup.run)
        await trio.sleep(100)  # far past any backoff
        status = {child.id: child for child in sup.status().children}

        abnormal = fault in ("crash_before_ready", "crash_after_ready")
        restarts_b = (abnormal and restart is not Restart.TEMPORARY) or (
            fault == "clean_exit" and restart is Restart.PERMANENT
        )
        c_was_up = fault != "crash_before_ready"  # c starts only after b left "starting"
        assert b.starts == (2 if restarts_b else 1)
        assert a.starts == 1 + (restarts_b and strategy is Strategy.ONE_FOR_ALL)
        assert c.starts == 1 + (restarts_b and c_was_up and strategy is not Strategy.ONE_FOR_ONE)
        if restarts_b:
            assert status["b"].state == "running" and status["b"].restarts == 1
            assert [e.delay for e in events if e.kind == "restarting"] == [0.5]
        elif fault == "hang_in_shutdown":
            assert status["b"].state == "running"
        elif restart is Restart.TEMPORARY:
            assert "b" not in status
        else:
            assert status["b"].state == "stopped"
        assert status["a"].state == status["c"].state == "running"

        # Shutdown: reverse start order; a child that ignores stop() is cancelled after 3 s.
        t0 = trio.current_time()
        sup.stop()
    took = trio.current_time() - t0
    stopped = [e.path.split("/")[-1] for e in events if e.kind == "stopped" and e.path != "sup" and e.at >= t0]
    assert stopped == [x for x in ["c", "b", "a"] if x in status and status[x].state == "running"]
    if fault == "hang_in_shutdown":
        assert b.stop_requests == 1 and b.cancelled == 1
        assert took == pytest.approx(3.0)
    else:
        assert took == pytest.approx(0.0)
        assert b.cancelled == 0


async def test_backoff_sequence_doubles_to_the_cap(autojump_clock):
    flaky = Probe("flaky", "crash_before_ready")
    backoff = Backoff(min=0.5, max=4.0, jitter=0.0)
    sup = TreeSupervisor("sup", [flaky.spec(backoff=backoff)], intensity=Intensity(max_restarts=100, max_seconds=1))
    events = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sup.subscribe(), events)
        await nursery.start(sup.run)
        await trio.sleep(30)
        sup.stop()
    delays = [e.delay for e in events if e.kind == "restarting"]
    assert delays[:7] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    # the first restart is delayed too: the second start happened 0.5 s after the first
    starts = [e.at for e in events if e.kind == "started"]
    assert starts[1] - starts[0] == pytest.approx(0.5)


async def test_backoff_stays_at_its_cap_however_long_a_child_keeps_failing(autojump_clock):
    """``min * 2**n`` overflowed at the 1024th restart in a row (8.5 h of a broken server
    at the 30 s cap, the restart intensity never tripped): the supervisor itself crashed."""
    flaky = Probe("flaky", "crash_before_ready")
    backoff = Backoff(min=0.5, max=1.0, jitter=0.0)
    sup = TreeSupervisor("sup", [flaky.spec(backoff=backoff)], intensity=Intensity(max_restarts=100, max_seconds=1))
    events = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sup.subscribe(size=5000), events)
        await nursery.start(sup.run)
        await trio.sleep(1100)
        sup.stop()
    delays = [e.delay for e in events if e.kind == "restarting"]
    assert len(delays) > 1024 and set(delays[1:]) == {1.0}


async def test_backoff_jitter_stays_within_its_band(autojump_clock):
    flaky = Probe("flaky", "crash_before_ready")
    backoff = Backoff(min=1.0, max=8.0, jitter=0.2)
    sup = TreeSupervisor(
        "sup", [flaky.spec(backoff=backoff)], intensity=Intensity(max_restarts=100, max_seconds=1),
        rng=random.Random(7),
    )
    events = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sup.subscribe(), events)
        await nursery.start(sup.run)
        await trio.sleep(60)
        sup.stop()
    delays = [e.delay for e in events if e.kind == "restarting"][:6]
    for delay, base in zip(delays, [1, 2, 4, 8, 8, 8]):
        assert base <= delay < base * 1.2
    assert len(set(delays)) == len(delays)  # jittered, not constant


async def test_backoff_resets_after_staying_ready(autojump_clock):
    # ready for 0.1 s, 0.1 s, then 20 s (>= reset_after 10 s), then 0.1 s
    child = Probe("c", "crash_after_ready", after=[0.1, 0.1, 20.0, 0.1, 1e9])
    backoff = Backoff(min=0.5, max=30.0, jitter=0.0, reset_after=10.0)
    sup = TreeSupervisor("sup", [child.spec(backoff=backoff)], intensity=Intensity(max_restarts=100, max_seconds=1))
    events = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sup.subscribe(), events)
        await nursery.start(sup.run)
        await trio.sleep(100)
        sup.stop()
    assert [e.delay for e in events if e.kind == "restarting"] == [0.5, 1.0, 0.5, 1.0]


async def test_ready_not_started_is_what_resets(autojump_clock):
    # Each incarnation crashes *before* ready after a long time: never ready, so no reset.
    class SlowFail(Probe):
        async def start(self, *, task_status):
            self.starts += 1
            await trio.sleep(50)
            raise RuntimeError("never got ready")

    child = SlowFail("slow")
    backoff = Backoff(min=0.5, max=30.0, jitter=0.0, reset_after=10.0)
    sup = TreeSupervisor("sup", [child.spec(backoff=backoff)], intensity=Intensity(max_restarts=100, max_seconds=1))
    events = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sup.subscribe(), events)
        nursery.start_soon(sup.run)
        await trio.sleep(200)
        sup.stop()
    assert [e.delay for e in events if e.kind == "restarting"][:3] == [0.5, 1.0, 2.0]


async def test_max_consecutive_marks_failed_and_spares_siblings(autojump_clock):
    bad = Probe("bad", "crash_before_ready")
    good = Probe("good")
    backoff = Backoff(min=0.5, max=30.0, jitter=0.0, max_consecutive=3)
    sup = TreeSupervisor("sup", [good.spec(), bad.spec(backoff=backoff)], intensity=Intensity(max_restarts=10))
    events = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sup.subscribe(), events)
        await nursery.start(sup.run)
        await trio.sleep(100)
        status = {c.id: c for c in sup.status().children}
        assert status["bad"].state == "failed"
        assert bad.starts == 4  # the first try and three restarts
        assert status["good"].state == "running" and good.starts == 1
        failed = [e for e in events if e.kind == "failed"]
        assert len(failed) == 1 and "3 consecutive failures" in failed[0].reason
        sup.stop()


async def test_intensity_escalates_through_two_levels(autojump_clock):
    leaf = Probe("leaf", "crash_after_ready", after=0.01)
    fast = Backoff(min=0.01, max=0.01, jitter=0.0)

    async def start_mid(*, task_status):
        mid = TreeSupervisor("mid", [leaf.spec(backoff=fast)], intensity=Intensity(max_restarts=2, max_seconds=10))
        await mid.run(task_status=task_status)

    sibling = Probe("sibling")
    root = TreeSupervisor(
        "root",
        [sibling.spec(), ChildSpec(id="mid", start=start_mid, supervisor=True, backoff=fast)],
        intensity=Intensity(max_restarts=2, max_seconds=10),
    )
    events = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, root.subscribe(), events)
        with pytest.raises(SupervisorGaveUp) as info:
            await root.run()
    assert info.value.path == "root"
    assert "child 'mid' exited with SupervisorGaveUp" in info.value.reason
    gave_up = [e.path for e in events if e.kind == "gave_up"]
    assert gave_up == ["root/mid", "root/mid", "root/mid", "root"]
    # mid gave up 3 times: its 3 incarnations each ran the leaf 3 times (2 restarts allowed)
    assert leaf.starts == 9
    # root stopped its remaining child on the way out
    assert sibling.starts == 1 and "root/sibling" in [e.path for e in events if e.kind == "stopped"]


async def test_nested_status_tree(autojump_clock):
    leaf = Probe("leaf")

    async def start_mid(*, task_status):
        await TreeSupervisor("mid", [leaf.spec()], strategy=Strategy.REST_FOR_ONE).run(task_status=task_status)

    root = TreeSupervisor("root", [ChildSpec(id="mid", start=start_mid, supervisor=True)])
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        await trio.sleep(2)
        tree = root.status()
        assert tree.id == "root" and tree.strategy == "one_for_one"
        (mid,) = tree.children
        assert mid.id == "mid" and mid.strategy == "rest_for_one" and mid.state == "running"
        (leaf_status,) = mid.children
        assert leaf_status.id == "leaf" and leaf_status.state == "running"
        assert leaf_status.uptime == pytest.approx(2.0)
        root.stop()


async def test_restarting_shows_next_attempt(autojump_clock):
    child = Probe("c", "crash_after_ready", "run", after=1.0)
    sup = TreeSupervisor("sup", [child.spec(backoff=Backoff(min=10.0, max=10.0, jitter=0.0))])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(4)  # crashed at 1 s; next attempt at 11 s
        (status,) = sup.status().children
        assert status.state == "restarting"
        assert status.next_attempt_in == pytest.approx(7.0)
        assert status.last_exit == "RuntimeError: c crashed"
        await trio.sleep(10)
        (status,) = sup.status().children
        assert status.state == "running" and status.restarts == 1
        sup.stop()


async def test_dynamic_add_remove_restart_while_siblings_run(autojump_clock):
    steady = Probe("steady")
    sup = TreeSupervisor("sup", [steady.spec()])
    events = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sup.subscribe(), events)
        await nursery.start(sup.run)
        extra = Probe("extra")
        status = await sup.add_child(extra.spec())
        assert status.state == "running" and sup.which("extra") is extra
        with pytest.raises(ValueError, match="already has a child 'extra'"):
            await sup.add_child(extra.spec())
        await trio.sleep(5)
        await sup.remove_child("extra")
        assert sup.child_ids() == ["steady"] and extra.cancelled == 0 and extra.stop_requests == 1
        with pytest.raises(KeyError):
            await sup.remove_child("extra")
        again = Probe("again", "crash_before_ready", "run")
        status = await sup.add_child(again.spec())
        assert status.state == "restarting"
        await trio.sleep(5)
        assert sup.which("again") is again
        status = await sup.restart_child("again")
        assert status.state == "running" and again.starts == 3
        assert steady.starts == 1 and sup.which("steady") is steady  # untouched throughout
        sup.stop()
    kinds = [(e.kind, e.path) for e in events if e.kind in ("added", "removed")]
    assert kinds == [("added", "sup/extra"), ("removed", "sup/extra"), ("added", "sup/again")]


async def test_stop_the_supervisor_is_not_a_failure(autojump_clock):
    a, b = Probe("a"), Probe("b")
    sup = TreeSupervisor("sup", [a.spec(), b.spec()])
    events = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sup.subscribe(), events)
        await nursery.start(sup.run)
        sup.stop()
    assert not [e for e in events if e.kind in ("exited", "restarting", "gave_up")]
    assert a.starts == b.starts == 1


async def test_cancelling_the_supervisor_still_stops_children_in_order(autojump_clock):
    a, b = Probe("a"), Probe("b", "hang_in_shutdown")
    sup = TreeSupervisor("sup", [a.spec(), b.spec(shutdown=2.0)])
    events = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, sup.subscribe(), events)
        async with trio.open_nursery() as inner:
            await inner.start(sup.run)
            t0 = trio.current_time()
            inner.cancel_scope.cancel()
        assert trio.current_time() - t0 == pytest.approx(2.0)
        await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert [e.path for e in events if e.kind == "stopped"][:2] == ["sup/b", "sup/a"]
    assert b.cancelled == 1 and a.stop_requests == 1


class SlowStart:
    """A child whose start takes ``delay`` s before it is ready; records when it began."""

    def __init__(self, name, delay):
        self.name, self.delay, self.began = name, delay, []

    async def start(self, *, task_status):
        self.began.append(trio.current_time())
        await trio.sleep(self.delay)
        task_status.started(self)
        await trio.sleep_forever()

    def spec(self):
        return ChildSpec(id=self.name, start=self.start, backoff=NO_JITTER, shutdown=1.0)


async def test_children_start_in_order_by_default(autojump_clock):
    slow, quick = SlowStart("slow", 20.0), SlowStart("quick", 0.0)
    sup = TreeSupervisor("sup", [slow.spec(), quick.spec()])
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        await nursery.start(sup.run)
        assert quick.began[0] - t0 == pytest.approx(20.0)  # waited for its elder sibling
        sup.stop()


async def test_concurrent_starts_do_not_wait_for_a_slow_sibling(autojump_clock):
    """One child stuck in a slow start (an MCP server connecting) holds back neither a
    sibling's first start nor its restart."""
    slow, quick = SlowStart("slow", 1000.0), Probe("quick", "run", "crash_after_ready", "run", after=[1.0, 1.0])
    sup = TreeSupervisor("sup", [slow.spec(), quick.spec()], concurrent_starts=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run)
        await trio.sleep(1.0)
        assert sup.which("quick") is quick and sup.which("slow") is None
        status = await sup.restart_child("quick")  # its second incarnation crashes after 1 s
        assert status.state == "running"
        await trio.sleep(5.0)  # crash, 0.5 s backoff, third incarnation
        assert quick.starts == 3 and sup.which("quick") is quick
        assert sup.which("slow") is None and len(slow.began) == 1  # still in its first start
        sup.stop()


def test_concurrent_starts_need_one_for_one():
    with pytest.raises(ValueError, match="one_for_one"):
        TreeSupervisor("sup", strategy=Strategy.REST_FOR_ONE, concurrent_starts=True)


async def test_a_supervisor_that_gave_up_is_restarted_by_its_parent(autojump_clock):
    """A parent restarts a child supervisor by running the same object again (the facade's
    ``start=self._servers.run``). That re-run used to keep the closed mailbox, the give-up
    and the restart history: it relaunched its children and died at once, again and again,
    until the parent gave up too. Now each run starts afresh."""
    leaf = Probe("leaf", "crash_after_ready", "crash_after_ready", "crash_after_ready", "run", after=0.1)
    fast = Backoff(min=0.01, max=0.01, jitter=0.0)
    mid = TreeSupervisor("mid", [leaf.spec(backoff=fast)], intensity=Intensity(max_restarts=2, max_seconds=5))
    sibling = Probe("sibling")
    root = TreeSupervisor(
        "root",
        [sibling.spec(), ChildSpec(id="mid", start=mid.run, supervisor=True, backoff=Backoff(min=1.0, max=1.0, jitter=0.0))],
        intensity=Intensity(max_restarts=3, max_seconds=100),
    )
    events = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, root.subscribe(), events)
        await nursery.start(root.run)
        await trio.sleep(10)
        assert [e.path for e in events if e.kind == "gave_up"] == ["root/mid"]  # once, not the root
        assert leaf.starts == 4 and mid.which("leaf") is leaf  # the re-run started it again
        (mid_status,) = [c for c in root.status().children if c.id == "mid"]
        assert mid_status.state == "running" and mid_status.restarts == 1
        assert sibling.starts == 1 and root.which("sibling") is sibling
        status = await mid.add_child(Probe("late").spec())  # asks reach the re-run supervisor
        assert status.state == "running"
        root.stop()


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
async def test_group_restart_does_not_launch_a_queued_sibling(autojump_clock, strategy):
    """Sequential starts: a crashes while b is still starting and c waits its turn. Stopping b
    for the group restart used to let the start queue launch c mid-restart; c was then marked
    restarting while its task ran, its ready was ignored, and it stayed starting for good, so
    nothing in the tree started again. Now the group leaves the start queue before its
    members are stopped, and all three come back."""
    a = Probe("a", "crash_after_ready", "run", after=0.5)
    b, c = SlowStart("b", 10.0), SlowStart("c", 0.0)
    sup = TreeSupervisor("sup", [a.spec(), b.spec(), c.spec()], strategy=strategy)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run)
        await trio.sleep(60)
        assert {s.id: s.state for s in sup.status().children} == {"a": "running", "b": "running", "c": "running"}
        assert a.starts == 2 and len(b.began) == 2 and len(c.began) == 1  # c's first start is its only one
        sup.stop()


async def ask_into(answers, key, call, *args):
    answers[key] = await call(*args)


async def test_removing_a_child_whose_exit_is_pending(autojump_clock):
    """x fails to start while the supervisor is busy, behind a queued remove_child('x'). Its
    stop used to return at once for a task already ended, skipping the bookkeeping: x stayed
    starting for good, add_child('x') was never answered and, starts being sequential, no
    child ever started again. Now the stop finishes x's record, and the exit is ignored."""

    async def fails_to_start(*, task_status):
        await trio.sleep(0.5)
        raise RuntimeError("cannot start")

    busy = Probe("busy", "hang_in_shutdown")  # its removal keeps the loop busy for 1 s
    sup = TreeSupervisor("sup", [busy.spec(shutdown=1.0)])
    answers = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        nursery.start_soon(ask_into, answers, "add x", sup.add_child, ChildSpec(id="x", start=fails_to_start))
        await trio.sleep(0.1)
        nursery.start_soon(ask_into, answers, "remove busy", sup.remove_child, "busy")
        await trio.sleep(0.1)
        nursery.start_soon(ask_into, answers, "remove x", sup.remove_child, "x")  # ahead of x's exit
        await trio.sleep(5)
        assert answers["add x"].state == "stopped" and "remove x" in answers
        assert sup.child_ids() == []
        late = Probe("late")
        with trio.fail_after(5):
            assert (await sup.add_child(late.spec())).state == "running"
        sup.stop()


async def test_siblings_that_fail_together_count_as_one_restart(autojump_clock):
    """one_for_all: a and b fail together (a resource they share broke). Stopping b for a's
    group restart used to return at once since b's task had ended, so b's exit then counted
    as a second failure: two restarts per incident, and the supervisor gave up at the second
    of three incidents with max_restarts=3. Now b's exit is part of the group restart."""
    broken = trio.Event()

    async def shares_a_resource(*, task_status):
        task_status.started(None)
        await broken.wait()
        raise RuntimeError("the shared resource broke")

    fast = Backoff(min=0.1, max=0.1, jitter=0.0)
    sup = TreeSupervisor(
        "sup",
        [ChildSpec(id=name, start=shares_a_resource, backoff=fast) for name in ("a", "b")],
        strategy=Strategy.ONE_FOR_ALL,
        intensity=Intensity(max_restarts=3, max_seconds=60),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for _ in range(3):
            broken.set()
            await trio.sleep(0.01)
            broken = trio.Event()
            await trio.sleep(1)
        assert [(s.state, s.restarts) for s in sup.status().children] == [("running", 3), ("running", 3)]
        sup.stop()


async def test_restart_child_queued_while_the_child_exits(autojump_clock):
    """restart_child('a') waits behind a slow removal while a (transient) exits normally. The
    stop used to return at once since a's task had ended, a was never started again and the
    call answered ``stopped``. Now an operator's restart always starts the child again."""
    a = Probe("a", "clean_exit", "run", after=0.5)
    busy = Probe("busy", "hang_in_shutdown")
    sup = TreeSupervisor("sup", [a.spec(restart=Restart.TRANSIENT), busy.spec(shutdown=1.0)])
    answers = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        nursery.start_soon(ask_into, answers, "remove busy", sup.remove_child, "busy")
        await trio.sleep(0.1)
        nursery.start_soon(ask_into, answers, "restart a", sup.restart_child, "a")  # ahead of a's exit
        await trio.sleep(5)
        assert answers["restart a"].state == "running" and a.starts == 2 and sup.which("a") is a
        sup.stop()


@pytest.mark.parametrize("operation", ["restart_child", "remove_child"])
async def test_a_group_backoff_survives_one_member_leaving_it(autojump_clock, operation):
    """one_for_all: a crashed, so a and b wait out one shared backoff. Restarting or removing
    a cancelled that shared timer, and b stayed restarting for good. Now a member leaving
    the timer takes only itself off it: b starts when the backoff ends."""
    a, b = Probe("a", "crash_after_ready", "run", after=0.5), Probe("b")
    slow = Backoff(min=5.0, max=5.0, jitter=0.0)
    sup = TreeSupervisor("sup", [a.spec(backoff=slow), b.spec(backoff=slow)], strategy=Strategy.ONE_FOR_ALL)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(1)
        assert [s.state for s in sup.status().children] == ["restarting", "restarting"]
        await getattr(sup, operation)("a")
        await trio.sleep(10)
        assert sup.which("b") is b and b.starts == 2
        assert a.starts == (2 if operation == "restart_child" else 1)
        sup.stop()


async def test_supervisor_state_follows_its_run(autojump_clock):
    """A supervisor used to say ``running`` before it was ever run. Now it is ``stopped``
    until run, ``starting`` until its first children are up, ``running``, then ``stopped``."""
    sup = TreeSupervisor("sup", [SlowStart("slow", 2.0).spec()])
    assert sup.status().state == "stopped"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run)
        await trio.sleep(1)
        assert sup.status().state == "starting"
        await trio.sleep(2)
        assert sup.status().state == "running"
        sup.stop()
    assert sup.status().state == "stopped"


async def test_concurrent_starts_remove_children_at_once_and_go_on_supervising(autojump_clock):
    """Removals (a reload dropping servers) ran inside the supervisor's loop, one at a time:
    two servers slow to drain took the sum of their shutdowns, and meanwhile a sibling that
    crashed was not restarted, nor a new child started, until the last removal was over.
    Now, with ``concurrent_starts``, each removal runs beside the loop."""
    one, two = Probe("one", "hang_in_shutdown"), Probe("two", "hang_in_shutdown")
    crashy = Probe("crashy", "run", "crash_after_ready", "run", after=1.0)
    sup = TreeSupervisor(
        "sup", [one.spec(shutdown=10.0), two.spec(shutdown=10.0), crashy.spec()], concurrent_starts=True
    )
    removed = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert (await sup.restart_child("crashy")).state == "running"  # it crashes 1 s from now
        t0 = trio.current_time()
        for name in ("one", "two"):
            nursery.start_soon(ask_into, removed, name, sup.remove_child, name)
        await trio.sleep(3.0)  # the crash, its 0.5 s backoff, the restart: all within the drains
        assert crashy.starts == 3 and sup.which("crashy") is crashy
        late = Probe("late")
        assert (await sup.add_child(late.spec())).state == "running"
        assert trio.current_time() - t0 < 10.0 and not removed
        with trio.fail_after(15.0):  # each waits out its 10 s shutdown, then is cancelled
            while len(removed) < 2:
                await trio.sleep(0.1)
        assert trio.current_time() - t0 == pytest.approx(10.0, abs=0.2)  # not 20: side by side
        assert sup.child_ids() == ["crashy", "late"] and one.cancelled == two.cancelled == 1
        sup.stop()


async def test_a_child_supervisor_waiting_to_restart_still_shows_its_children(autojump_clock):
    """A child supervisor that gave up waits out its backoff before its parent restarts it;
    its node meanwhile had no children at all, so a monitor looking up a leaf by its path
    (``connection:NAME`` under ``server:NAME``) found nothing (found by a probe). Now the
    node shows the children as its last run left them, stopped, with their restarts and
    last exits."""
    leaf = Probe("leaf", "crash_after_ready", "crash_after_ready", "run", after=0.01)
    fast = Backoff(min=0.01, max=0.01, jitter=0.0)

    async def start_mid(*, task_status):
        mid = TreeSupervisor("mid", [leaf.spec(backoff=fast)], intensity=Intensity(max_restarts=0, max_seconds=10))
        await mid.run(task_status=task_status)

    root = TreeSupervisor("root", [ChildSpec(id="mid", start=start_mid, supervisor=True, backoff=Backoff(min=60, max=60, jitter=0.0))])
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        await trio.sleep(1.0)  # the leaf crashed, mid gave up, its restart is 60 s away
        (mid,) = root.status().children
        assert mid.state == "restarting", mid
        (shown,) = mid.children
        assert (shown.id, shown.state) == ("leaf", "stopped") and "leaf crashed" in (shown.last_exit or ""), shown
        root.stop()


async def test_a_restart_asked_while_the_child_is_being_removed_is_refused_not_left_unanswered(autojump_clock):
    """With ``concurrent_starts`` a removal drains beside the loop; a ``restart_child`` of
    the same child asked meanwhile waited for a start that the removal then made
    impossible, and was never answered (found by a review). Now it is refused at once."""
    slow = Probe("slow", "hang_in_shutdown")
    sup = TreeSupervisor("sup", [slow.spec(shutdown=5.0)], concurrent_starts=True)
    answers: dict = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        nursery.start_soon(ask_into, answers, "remove", sup.remove_child, "slow")
        await trio.sleep(0.1)
        with trio.fail_after(1), pytest.raises(KeyError, match="being removed"):
            await sup.restart_child("slow")
        await trio.sleep(20)
        assert "remove" in answers and sup.child_ids() == []
        sup.stop()


async def test_a_keyboard_interrupt_in_a_child_ends_the_tree_and_is_no_crash_to_restart(autojump_clock):
    """Python lands a Ctrl-C in whichever task runs when it comes: one of a child's own
    tasks (a connection's reader, say), whose nursery wraps it in a group. The tree took
    that group for a crash, restarted the child and went on, so the Ctrl-C never reached
    the host. It now propagates (as `SystemExit` does), and the child is not restarted."""
    starts = 0

    async def start(*, task_status):
        nonlocal starts
        starts += 1

        async def ctrl_c_lands_here():
            await trio.sleep(1)
            raise KeyboardInterrupt

        async with trio.open_nursery() as own:
            task_status.started(None)
            own.start_soon(ctrl_c_lands_here)
            await trio.sleep_forever()

    sup = TreeSupervisor("sup", [ChildSpec(id="child", start=start, restart=Restart.PERMANENT, backoff=NO_JITTER)])
    with pytest.raises(BaseExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(100)  # far past any backoff
            nursery.cancel_scope.cancel()
    assert raised.group_contains(KeyboardInterrupt, depth=None)
    assert starts == 1
