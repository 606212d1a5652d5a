"""The config loader and the files it reads: where relative paths lead from a symlinked
config, and what becomes of a config or ``envFile`` that cannot be read as text."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import supervisor._config
from supervisor._config import ConfigError, load_config


def publish(mount: Path, stamp: str, files: dict[str, str]) -> Path:
    """Write ``files`` as Kubernetes' atomic writer updates a mounted ConfigMap: into a new
    ``..<stamp>`` directory, then ``..data`` swapped to it in one rename."""
    version = mount / f"..{stamp}"
    version.mkdir()
    for name, text in files.items():
        (version / name).write_text(text, encoding="utf-8")
    (mount / "..data_tmp").symlink_to(version.name)
    os.replace(mount / "..data_tmp", mount / "..data")
    for name in files:
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(f"..data/{name}")
    return version


def test_a_symlinked_configs_relative_paths_are_where_the_link_is_and_outlive_a_configmap_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative paths were taken from the symlink's *target* directory (``resolve()``): from a
    ConfigMap mount, the timestamped ``..2026_12_05_A`` that the next update deletes. A server
    with ``cwd: "."`` could then not restart (its cwd was gone), and the next reload replaced
    it though its entry had not changed (found by a reload probe). Now they are the mount's,
    as for VS Code and docker-compose; also from a relative config path."""
    mount = tmp_path / "cm"
    mount.mkdir()
    entry = {"command": "./run.sh", "envFile": "secrets.env"}
    doc = {"mcpServers": {"here": {**entry, "cwd": "."}, "bare": entry}}
    old = publish(mount, "2026_12_05_A", {"config.json": json.dumps(doc), "secrets.env": "TOKEN=a\n"})
    monkeypatch.chdir(tmp_path)
    first = load_config("cm/config.json", environ={})
    assert first.source == "cm/config.json", "messages name the file as it was given"
    here, bare = first.server("here"), first.server("bare")
    assert (here.cwd, here.command, here.env) == (str(mount), "./run.sh", {"TOKEN": "a"})
    assert (bare.cwd, bare.command) == (None, str(mount / "run.sh"))

    # An update that changes another key; the directory the first target was in is deleted.
    update = {**doc, "supervisor": {"drain_timeout": 11}}
    publish(mount, "2026_12_05_B", {"config.json": json.dumps(update), "secrets.env": "TOKEN=a\n"})
    shutil.rmtree(old)
    assert os.path.isdir(here.cwd), "the running server's cwd is still there to restart in"
    second = load_config(mount / "config.json", environ={})
    assert second.settings.drain_timeout == 11
    assert second.servers == first.servers, "an unchanged entry loads to the same spec: a reload leaves it be"



def test_a_symlinked_config_is_warned_of_by_the_mode_of_the_file_it_points_to(tmp_path: Path) -> None:
    """The writable-config warning looks at the file that is read (a symlink's own mode is
    always 0777: no warning for every ConfigMap mount), named as the config was given."""
    from supervisor._preflight import start_warnings

    target = tmp_path / "real.json"
    target.write_text(json.dumps({"mcpServers": {"x": {"command": "/bin/sh"}}}))
    target.chmod(0o644)
    (tmp_path / "config.json").symlink_to("real.json")
    config = load_config(tmp_path / "config.json", environ={})
    assert start_warnings(config) == []
    target.chmod(0o666)
    (warning,) = start_warnings(config)
    assert warning.startswith(f"{tmp_path / 'config.json'}: any user of this machine may write this file")

# -- what cannot be read as text ----------------------------------------------------------------


def with_env_file(tmp_path: Path, env_file: str) -> Path:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"s": {"command": "python3", "envFile": env_file}}}))
    return config


def refusal(config: Path | str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(config, environ={})
    return info.value


@pytest.mark.parametrize(("env_file", "reason"), [
    ("a\0b", "'{dir}/a\\x00b': the path holds a NUL character, which no file name can"),
    ("a\ud800", "'{dir}/a\\ud800': the path holds \\ud800, which no file name can"),
    ("adir", "cannot read '{dir}/adir': Is a directory"),
    ("latin1.env", "'{dir}/latin1.env' is not UTF-8 text (invalid continuation byte at byte 9)"),
    ("nul.env", "'{dir}/nul.env' line 2: holds a NUL character, which no process can be given"),
])
def test_an_env_file_that_cannot_be_read_as_text_is_a_config_error_naming_it(
    tmp_path: Path, env_file: str, reason: str
) -> None:
    """An ``envFile`` whose path held a NUL character raised ValueError ("embedded null
    byte") out of `load_config`, which the daemon did not expect on a reload (found by a
    reload probe; a lone surrogate, "\\ud800" in JSON, raised UnicodeEncodeError). Now every
    way of failing to read one is a `ConfigError` naming the config, the key and the file;
    a NUL inside the file is told with its line, not as an ``env`` key the config lacks."""
    (tmp_path / "adir").mkdir()
    (tmp_path / "latin1.env").write_bytes(b"NAME=Andr\xe9\n")
    (tmp_path / "nul.env").write_bytes(b"A=1\nB=x\0y\n")
    config = with_env_file(tmp_path, env_file)
    error = refusal(config)
    assert (error.source, error.key) == (str(config), "mcpServers.s.envFile")
    assert error.reason == reason.format(dir=tmp_path)


@pytest.mark.parametrize(("name", "reason"), [
    ("a\0b.json", "the path holds a NUL character, which no file name can"),
    ("a\ud800.json", "the path holds \\ud800, which no file name can"),
    ("adir", "cannot read the file: Is a directory"),
    ("latin1.json", "not UTF-8 text (invalid continuation byte at byte 21)"),
])
def test_a_config_that_cannot_be_read_as_text_is_a_config_error(tmp_path: Path, name: str, reason: str) -> None:
    """The config's own path, likewise (a NUL byte raised ValueError); a name that cannot be
    printed as it is is shown quoted (repr), not with the NUL in it."""
    (tmp_path / "adir").mkdir()
    (tmp_path / "latin1.json").write_bytes(b'{"mcpServers": {"Andr\xe9": {"command": "x"}}}')
    error = refusal(tmp_path / name)
    assert (error.source, error.key, error.reason) == (str(tmp_path / name), "", reason)
    assert str(error).startswith(repr(str(tmp_path / name)) if not name.isprintable() else str(tmp_path / name))


# -- what is not a regular file ------------------------------------------------------------------


@contextmanager
def written(fifo: Path, text: str) -> Iterator[None]:
    """A writer of ``text`` into ``fifo`` (as 1Password's app writes a mounted .env file once
    a read of it is authorized), gone by the end: released by a reader of our own if the
    code under test never opened the FIFO."""
    writer = threading.Thread(target=fifo.write_text, args=(text,), daemon=True)
    writer.start()
    try:
        yield
    finally:
        if writer.is_alive():
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(10)
        assert not writer.is_alive()


@contextmanager
def unblocked_after(fifo: Path, seconds: float) -> Iterator[None]:
    """Should a read of ``fifo`` still wait for a writer after ``seconds`` (the old loader's
    waited for ever), one comes and goes, so that the test fails instead of hanging."""

    def unblock() -> None:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader waits
            pass

    timer = threading.Timer(seconds, unblock)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join(10)


def test_an_env_file_fifo_nobody_writes_is_refused_after_a_bound_not_waited_for_for_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``envFile`` that is a FIFO nobody writes yet (1Password mounts .env files as FIFOs
    its app writes once the read is authorized; a locked app does not) blocked the read, and
    the daemon reloading with it, for ever (found by a reload probe). Now the loader waits
    at most `PIPE_TIMEOUT` for the FIFO to be written to its end, and says why it gave up."""
    # Only the bound is shortened (30 s for real: a test must not wait it out); the FIFO and
    # the read are real. raising=False: a loader without one fails below, not here.
    monkeypatch.setattr(supervisor._config, "PIPE_TIMEOUT", 0.2, raising=False)
    fifo = tmp_path / "secrets.env"
    os.mkfifo(fifo)
    config = with_env_file(tmp_path, "secrets.env")
    with unblocked_after(fifo, 10):
        error = refusal(config)
    assert error.key == "mcpServers.s.envFile"
    assert error.reason.startswith(f"{str(fifo)!r} is a FIFO (a named pipe) that gave nothing within 0.2 s: ")
    assert "1Password" in error.reason


def test_an_env_file_fifo_that_is_written_is_read_as_a_file_is(tmp_path: Path) -> None:
    """A FIFO that is written (1Password's app unlocked, the read authorized), as the config
    or as an ``envFile``, is read to its writer's close: ``--config <(op inject ...)`` and
    1Password's mounted .env files keep working."""
    fifo = tmp_path / "secrets.env"
    os.mkfifo(fifo)
    config = with_env_file(tmp_path, "secrets.env")
    with written(fifo, "TOKEN=t\nexport OTHER='o'\n"):
        assert load_config(config, environ={}).server("s").env == {"TOKEN": "t", "OTHER": "o"}
    config_fifo = tmp_path / "from-op.json"
    os.mkfifo(config_fifo)
    with written(config_fifo, json.dumps({"mcpServers": {"s": {"command": "python3"}}})):
        assert load_config(config_fifo, environ={}).server("s").command == "python3"


def test_a_device_is_refused_unread_but_dev_null_is_an_empty_file(tmp_path: Path) -> None:
    """A character device was read as a file: ``/dev/zero`` until memory ran out, a terminal
    until someone typed. Now a device (or socket) is refused without being opened; ``/dev/null``
    is still the empty file (``"envFile": "${ENV_FILE:-/dev/null}"``)."""
    error = refusal(with_env_file(tmp_path, "/dev/zero"))
    assert (error.key, error.reason) == (
        "mcpServers.s.envFile", "'/dev/zero' is a character device, not a file: a read of it may block or never end"
    )
    assert refusal("/dev/zero").reason == "is a character device, not a file: a read of it may block or never end"
    assert load_config(with_env_file(tmp_path, os.devnull), environ={}).server("s").env == {}


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_a_number_too_long_to_read_is_a_config_error(tmp_path: Path, suffix: str) -> None:
    """Python reads no integer of more than 4300 digits: json and tomllib raised a bare
    ValueError, which left load_config as no ConfigError (the daemon's reload answered 500,
    its CLI "unknown")."""
    digits = "9" * 5000
    text = (f'{{"mcpServers": {{"s": {{"command": "x", "timeout": {digits}}}}}}}' if suffix == ".json"
            else f'[mcpServers.s]\ncommand = "x"\ntimeout = {digits}\n')
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"c\.(json|toml): a number of more than \d+ digits"):
        load_config(path, environ={})


def test_a_dotdot_after_a_symlinked_directory_leads_where_the_kernel_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``b/link/../c.json`` with ``b/link -> ../a/real``: the kernel opens ``a/c.json`` (``..``
    of a symlinked directory is its target's parent), but the relative paths were taken
    from ``b/`` (``os.path.abspath`` drops ``link/..`` as text): another directory's
    ``.env`` was loaded, silently (a review)."""
    for side in ("a", "b"):
        (tmp_path / side / "tools").mkdir(parents=True)
        (tmp_path / side / ".env").write_text(f"K=from-{side}\n")
    (tmp_path / "a" / "real").mkdir()
    (tmp_path / "b" / "link").symlink_to("../a/real")
    (tmp_path / "a" / "c.json").write_text(json.dumps(
        {"mcpServers": {"s": {"command": "x", "cwd": "tools", "envFile": ".env"}}}
    ))
    monkeypatch.chdir(tmp_path)
    (server,) = load_config("b/link/../c.json", environ={}).servers
    assert (server.cwd, server.env.get("K")) == (str((tmp_path / "a" / "tools").resolve()), "from-a")


@pytest.mark.parametrize("key", ["min", "max"])
def test_a_backoff_of_0_is_refused(tmp_path: Path, key: str) -> None:
    """``backoff.min`` (or ``max``) 0 made every delay 0: a server that crashed at once
    restarted some 40 times a second for ever (a review: servers have no restart intensity
    since 171f625, and nothing else bounds it without ``max_consecutive``)."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"mcpServers": {"s": {"command": "x", "backoff": {key: 0}}}}))
    with pytest.raises(ConfigError, match=rf"mcpServers\.s\.backoff\.{key}: must be > 0"):
        load_config(path, environ={})
    from protocol import BackoffPolicy, ServerSpec
    from supervisor._config import check_spec

    with pytest.raises(ValueError, match=rf"backoff\.{key}: must be > 0"):
        check_spec(ServerSpec(name="s", command="x", backoff=BackoffPolicy(**{key: 0})))
