"""Tunables, in one place, with their documented defaults and environment overrides.

FASTRNN_CPU_BACKENDS  comma-separated order in which "auto" tries backends for
                      NumPy (CPU) arrays; the first available one wins.
                      Default: "reference" (later issues put fast backends first).
"""
from __future__ import annotations

import os


def _env_list(name: str, default: str) -> tuple[str, ...]:
    raw = os.environ.get(name, default)
    return tuple(part.strip() for part in raw.split(",") if part.strip())


CPU_BACKEND_ORDER: tuple[str, ...] = _env_list("FASTRNN_CPU_BACKENDS", "reference")
