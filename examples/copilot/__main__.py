"""``python -m examples.copilot``: two chat turns of the copilot, then the supervision tree."""

from .app import run

run()
