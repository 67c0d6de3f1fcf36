"""The baselines, by method id."""

from __future__ import annotations

from .base import Method, Round
from .icarl import ICaRL

METHODS: dict[str, type[Method]] = {"icarl": ICaRL}

__all__ = ["METHODS", "Method", "Round"]
