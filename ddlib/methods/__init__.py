"""The baselines, by method id."""

from __future__ import annotations

from .base import Method, Round
from .bic import BiC
from .icarl import ICaRL
from .lwf import LwF
from .ucir import UCIR

METHODS: dict[str, type[Method]] = {"icarl": ICaRL, "lwf": LwF, "bic": BiC, "ucir": UCIR}

__all__ = ["METHODS", "Method", "Round"]
