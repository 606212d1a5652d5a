"""What would keep a configured stdio server from starting on this machine, and a config
file any user of the machine may change.

A valid config may still name a command that is not installed here or a ``cwd`` that does
not exist. Those are warnings, not `ConfigError`s: the file may be checked on one machine
and run on another, and a permanent server is retried with backoff until it can start.
``python -m supervisor check`` prints them; the daemon logs them at start.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
from collections.abc import Mapping

from protocol._settings import Config

from ._config import _redact_args, redact_command

__all__ = ["start_warnings"]


def start_warnings(config: Config, environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per problem, naming the file, the server, the key and the reason."""
    environ = os.environ if environ is None else environ
    where = f"{config.source}: " if config.source else ""
    warnings = []
    if config.source and _writable_by_anyone(config.source):
        warnings.append(
            f"{where}any user of this machine may write this file, which says what commands the "
            "supervisor runs and holds its secrets: `chmod o-w` it"
        )
    for spec in config.servers:
        if not spec.enabled or spec.command is None:
            continue
        prefix = f"{where}server {spec.name!r}:"
        if spec.cwd is not None and not os.path.isdir(spec.cwd):
            warnings.append(f"{prefix} cwd: {spec.cwd!r} is not a directory here")
            continue  # the command may be relative to it
        search = spec.env.get("PATH", environ.get("PATH", os.defpath))
        command = spec.command
        if os.sep in command and not os.path.isabs(command):
            command = os.path.join(spec.cwd or os.getcwd(), command)
        if shutil.which(command, path=search) is None:
            reason = "is not an executable file" if os.sep in spec.command else "is not found on PATH"
            shown = redact_command(spec.command)
            warnings.append(f"{prefix} command: {shown!r} {reason} here{_split_hint(spec.command, spec.args)}")
    return warnings


def _writable_by_anyone(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & stat.S_IWOTH)
    except OSError:
        return False


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return []




def _split_hint(command: str, args: list[str]) -> str:
    """For a whole command line put in ``command`` (a common slip: it is run as one file
    name, never split), the ``command``/``args`` it was meant to be, secrets redacted."""
    words = _words(command)
    if len(words) < 2:
        return ""
    return (
        "; it is one file name, not a command line: the arguments go in args, "
        f'"command": {json.dumps(words[0])}, "args": {json.dumps(_redact_args(words[1:] + list(args)))}'
    )
