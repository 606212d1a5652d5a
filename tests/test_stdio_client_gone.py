"""The daemon's ``--stdio`` front when its client is gone: killed, both its pipes closed.

The end of stdin alone means "the client piped its requests in and reads the answers":
they run to their end, for up to ``drain_timeout``. A killed client closes our stdout's
reader too: no answer can be delivered, so the requests are cut off at once (cancelled on
their servers) and the daemon exits, instead of holding them for the whole drain.
"""

from __future__ import annotations

import pytest
import trio

from conftest import procs_with_marker, wait_until
from test_daemon import server_entry, stdio_daemon_with_a_call, write_config


@pytest.mark.parametrize("closing", [("stdout", "stdin"), ("stdin", "stdout"), ("stdout",)], ids="-then-".join)
async def test_a_killed_stdio_client_has_its_call_cut_off_at_once(tmp_path, closing):
    """A 30 s call runs (it reports progress), then both our ends of the daemon's pipes
    close, in either order, as when the client is killed: the daemon exits and its server
    goes well within ``drain_timeout`` (60 s; the deadline of 30 s catches the old wait).
    The same when only the reader of the daemon's stdout goes (stdin still open): nothing
    can be answered any more, and the session ends as at the end of stdin."""
    echo, marker = server_entry("echo.py")
    config = write_config(tmp_path / "c.json", {"echo": echo}, drain_timeout=60)
    log_path = tmp_path / "stderr.log"
    daemon = None
    try:
        with trio.fail_after(30), open(log_path, "wb") as log_file:
            daemon, _ = await stdio_daemon_with_a_call(config, seconds=30, stderr=log_file)
            assert procs_with_marker(marker), "the server runs"
            for end in closing:  # the killed client's ends of the pipes
                await getattr(daemon, end).aclose()
            assert await daemon.wait() == 0, log_path.read_text()[-2000:]
        await wait_until(lambda: not procs_with_marker(marker), timeout=10, what="no process left behind")
        assert "cutting them off" not in log_path.read_text()  # not the drain running out
    finally:
        if daemon is not None and daemon.returncode is None:
            await daemon.stdin.aclose()
            daemon.kill()
            await daemon.wait()
