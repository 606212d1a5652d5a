"""The config loader and the files it reads: where relative paths lead from a symlinked
config, and what becomes of a config or ``envFile`` that cannot be read as text."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

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
