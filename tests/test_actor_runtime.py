"""The actor runtime's guarantees: tell, ask, late replies, death, tracebacks."""

import traceback

import pytest
import trio
import trio.testing

from actors import Mailbox, serve, spawn
from actors._runtime import POST_BATCH
from protocol import ActorDown, DeadlineExceeded, InvalidArguments, Overloaded


async def echo_actor(mailbox):
    async for msg, reply in mailbox:
        if reply is not None:
            reply.send(("echo", msg))


async def test_ask_returns_the_answer():
    async with trio.open_nursery() as nursery:
        ref = spawn(nursery, echo_actor, name="echo")
        assert await ref.ask(1, timeout=1) == ("echo", 1)
        assert await ref.ask("x") == ("echo", "x")
        nursery.cancel_scope.cancel()


async def test_ask_relays_a_failure_answer_and_the_actor_lives():
    async def picky(mailbox):
        async for msg, reply in mailbox:
            if msg == "bad":
                reply.fail(InvalidArguments("bad input"))
            else:
                reply.send("ok")

    async with trio.open_nursery() as nursery:
        ref = spawn(nursery, picky, name="picky")
        with pytest.raises(InvalidArguments, match="bad input"):
            await ref.ask("bad", timeout=1)
        assert await ref.ask("good", timeout=1) == "ok"
        nursery.cancel_scope.cancel()


async def test_tell_waits_while_full_and_tell_nowait_overloads():
    mailbox = Mailbox("slow", size=1)
    ref = mailbox.ref
    await ref.tell("a")
    with pytest.raises(Overloaded, match="full"):
        ref.tell_nowait("b")
    with trio.move_on_after(0.05) as scope:
        await ref.tell("b")
    assert scope.cancelled_caught, "tell should have waited on a full mailbox"
    assert mailbox.receive_nowait() == ("a", None)
    await ref.tell("b")
    assert mailbox.qsize() == 1


async def test_ask_times_out_with_deadline_exceeded_and_late_reply_is_harmless():
    held = []

    async def slow(mailbox):
        async for msg, reply in mailbox:
            if msg == "hold":
                held.append(reply)
            elif msg == "release":
                for r in held:
                    r.send("late")  # the asker is gone: must be dropped, not raise
                reply.send("released")

    async with trio.open_nursery() as nursery:
        ref = spawn(nursery, slow, name="slow")
        with pytest.raises(DeadlineExceeded, match="within 0.1 s"):
            await ref.ask("hold", timeout=0.1)
        assert await ref.ask("release", timeout=1) == "released"
        assert held[0].answered
        assert await ref.ask("release", timeout=1) == "released"  # still alive
        nursery.cancel_scope.cancel()


async def test_ask_timeout_counts_time_waiting_for_mailbox_space():
    mailbox = Mailbox("full", size=0)  # nobody reads: the send itself blocks
    with pytest.raises(DeadlineExceeded):
        await mailbox.ref.ask("x", timeout=0.05)


async def test_cancelled_asker_drops_late_reply():
    taken = []

    async def taker(mailbox):
        async for msg, reply in mailbox:
            taken.append(reply)

    async with trio.open_nursery() as nursery:
        ref = spawn(nursery, taker, name="taker")
        with trio.move_on_after(0.05) as scope:
            await ref.ask("q")  # no timeout of its own: cancelled from outside
        assert scope.cancelled_caught
        assert len(taken) == 1
        taken[0].send("late")  # nobody waits any more
        taken[0].send("again")  # a second answer is dropped too
        nursery.cancel_scope.cancel()


async def test_an_answer_says_whether_it_reached_its_asker(autojump_clock):
    """An actor could not tell an answer its asker got from one dropped because the asker
    had left (cancelled, or its deadline passed): ``send`` returned None either way, so an
    actor that handed something out with its answer (a breaker's trial permit) never took it
    back. Now ``send``/``fail`` return True only when the asker gets the answer."""
    taken = []

    async def taker(mailbox):
        async for msg, reply in mailbox:
            if msg == "now":
                taken.append(reply.send("ok"))
            else:
                taken.append(reply)

    async with trio.open_nursery() as nursery:
        ref = spawn(nursery, taker, name="taker")
        assert await ref.ask("now", timeout=1) == "ok"
        assert taken.pop() is True
        for _ in range(20):  # the actor may run before or after the cancelled asker resumes
            with trio.CancelScope() as gone:
                gone.cancel()
                await ref.ask("now")
            await trio.testing.wait_all_tasks_blocked()
        assert taken == [False] * 20
        taken.clear()
        with trio.CancelScope() as gone:
            gone.cancel()
            await ref.ask("queued then cancelled")
        with pytest.raises(DeadlineExceeded):
            await ref.ask("held past its deadline", timeout=1)
        with trio.move_on_after(1):
            await ref.ask("held then cancelled")
        await trio.testing.wait_all_tasks_blocked()
        assert len(taken) == 3
        assert [reply.send("late") for reply in taken] == [False] * 3
        assert [reply.fail(ValueError("late")) for reply in taken] == [False] * 3
        nursery.cancel_scope.cancel()


async def test_death_fails_pending_and_later_asks_at_once():
    go = trio.Event()

    async def dies_when_released(mailbox):
        held = []
        async for msg, reply in mailbox:
            if msg == "block":
                await go.wait()
                raise RuntimeError("kaboom")
            held.append(reply)  # taken, never answered

    results, died = [], []

    async def asker(ref, msg):
        try:
            await ref.ask(msg, timeout=30)
        except ActorDown as exc:
            results.append((msg, exc, trio.current_time()))

    async def run_actor(mailbox):
        try:
            await serve(mailbox, dies_when_released)
        except RuntimeError as exc:
            died.append(exc)

    mailbox = Mailbox("mortal")
    ref = mailbox.ref
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_actor, mailbox)
        nursery.start_soon(asker, ref, "taken")
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell("block")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(asker, ref, "queued")
        await trio.testing.wait_all_tasks_blocked()
        assert mailbox.qsize() == 1
        t0 = trio.current_time()
        go.set()
    assert died and str(died[0]) == "kaboom"
    # both askers got ActorDown at once, not after their 30 s deadline
    assert sorted(m for m, _, _ in results) == ["queued", "taken"]
    assert all("kaboom" in str(e) and at - t0 < 1 for _, e, at in results)
    with pytest.raises(ActorDown, match="mortal"):
        await ref.ask("later", timeout=30)
    with pytest.raises(ActorDown):
        ref.tell_nowait("later")
    with pytest.raises(ActorDown):
        await ref.tell("later")
    assert not ref.alive


async def test_every_actor_down_is_its_own_exception():
    """A dead actor's ``ActorDown`` was one exception object, stored when the mailbox closed,
    given to every pending ask and raised again by every later send: each raise grew its
    traceback (1000 sends, thousands of entries), pinning every caller's frames and the
    messages they sent, and a caller that amended it (retry adds ``data["attempts"]``)
    changed it for everyone. Now each pending ask and each raise gets a fresh one, with a
    traceback of its own raise only."""
    mailbox = Mailbox("gone", 8)  # nobody reads it
    ref = mailbox.ref
    downs = []

    async def asker():
        try:
            await ref.ask("pending", timeout=30)
        except ActorDown as down:
            downs.append(down)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(asker)
        nursery.start_soon(asker)
        await trio.testing.wait_all_tasks_blocked()
        mailbox.close("stopped")
    assert len(downs) == 2
    for _ in range(200):
        for send in (ref.tell_nowait, ref.post, ref.tell, ref.ask):
            try:
                result = send("later")
                if send in (ref.tell, ref.ask):
                    await result
            except ActorDown as down:
                downs.append(down)
    assert len(downs) == 2 + 4 * 200
    assert len({id(down) for down in downs}) == len(downs)
    assert all("actor 'gone' is down (stopped)" in str(down) and down.data == {"actor": "gone"} for down in downs)
    assert max(len(traceback.extract_tb(down.__traceback__)) for down in downs) <= 5  # its own raise only


async def test_exception_reaches_supervisor_with_original_traceback():
    def deep_helper():
        raise ValueError("from deep inside")

    async def fragile(mailbox):
        async for msg, reply in mailbox:
            deep_helper()

    mailbox = Mailbox("fragile")
    mailbox.ref.tell_nowait("go")
    with pytest.raises(ValueError) as info:
        await serve(mailbox, fragile)
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "deep_helper" in frames and "fragile" in frames


async def test_stop_drains_queue_then_the_loop_ends():
    seen = []

    async def collector(mailbox):
        async for msg, reply in mailbox:
            seen.append(msg)

    mailbox = Mailbox("drain")
    for i in range(3):
        mailbox.ref.tell_nowait(i)
    mailbox.stop()
    with pytest.raises(ActorDown, match="stopping"):
        mailbox.ref.tell_nowait(99)
    await serve(mailbox, collector)
    assert seen == [0, 1, 2]
    with pytest.raises(ActorDown, match="normal"):
        await mailbox.ref.ask("after", timeout=1)


async def test_posted_messages_keep_their_place_and_do_not_wake_the_actor():
    seen = []
    woken = 0

    async def recorder(mailbox):
        nonlocal woken
        while True:
            try:
                msg, reply = await mailbox.receive()
            except trio.EndOfChannel:
                return
            woken += 1
            seen.append(msg)
            while True:  # what is already there, without waiting
                try:
                    msg, reply = mailbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                seen.append(msg)
            if reply is not None:
                reply.send(list(seen))

    async with trio.open_nursery() as nursery:
        ref = spawn(nursery, recorder, name="recorder", size=64)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(10):
            ref.post(("posted", i))
        await trio.testing.wait_all_tasks_blocked()
        assert woken == 0 and seen == []  # nothing woke the actor
        ref.tell_nowait("told")
        ref.post(("posted", 10))
        # An ask sees everything sent before it, posted or told, in order.
        assert await ref.ask("asked", timeout=1) == [("posted", i) for i in range(10)] + ["told", ("posted", 10), "asked"]
        assert woken <= 2
        ref.post("last")
        ref.stop()  # posted messages are still handled
        with pytest.raises(ActorDown):
            ref.post("after stop")
    assert seen[-1] == "last"


async def test_posting_wakes_the_actor_once_a_batch_is_waiting():
    seen = []

    async def recorder(mailbox):
        async for msg, _ in mailbox:
            seen.append(msg)

    async with trio.open_nursery() as nursery:
        ref = spawn(nursery, recorder, name="recorder", size=1000)
        for i in range(POST_BATCH + 1):
            ref.post(i)
        await trio.testing.wait_all_tasks_blocked()
        assert seen == list(range(POST_BATCH))  # the full batch went; the next one waits
        nursery.cancel_scope.cancel()


def test_a_stopped_mailbox_still_hands_out_what_was_posted_then_ends():
    for receive_nowait in (True, False):
        mailbox = Mailbox("m", 8)
        mailbox.ref.tell_nowait("told")
        mailbox.ref.post("posted")
        mailbox.ref.stop()
        if receive_nowait:
            got = [mailbox.receive_nowait()[0], mailbox.receive_nowait()[0]]
            with pytest.raises(trio.EndOfChannel):
                mailbox.receive_nowait()
        else:

            async def drain():
                return [msg async for msg, _ in mailbox]

            got = trio.run(drain)
        assert got == ["told", "posted"]
    mailbox = Mailbox("m", 8)
    mailbox.ref.post("posted")
    mailbox.close("crashed")  # down: nothing more is handed out
    with pytest.raises(trio.ClosedResourceError):
        mailbox.receive_nowait()
