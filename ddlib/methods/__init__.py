"""The baselines, by method id."""

from __future__ import annotations

from ..names import METHOD_NAMES
from .base import Method, Round
from .bic import BiC
from .icarl import ICaRL
from .lwf import LwF
from .ucir import UCIR

METHODS: dict[str, type[Method]] = {m.name: m for m in (LwF, ICaRL, UCIR, BiC)}
assert list(METHODS) == list(METHOD_NAMES), "ddlib.names lists the methods of this registry"

__all__ = ["METHODS", "Method", "Round"]
