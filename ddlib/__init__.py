"""ddlib: discriminative distillation for class-incremental learning (Zhong et al., 2021)."""

from __future__ import annotations

__version__ = "0.1.0"

from .config import PROFILES, RunConfig  # noqa: E402
from . import grid  # noqa: E402  (ddlib.grid.grid(profile) in the exhibit pages)
from .analysis import average_table, headline, summary_table  # noqa: E402
from .book import glue  # noqa: E402
from .plan import describe, plan, run_all  # noqa: E402
from .run import run  # noqa: E402

__all__ = ["PROFILES", "RunConfig", "__version__", "average_table", "describe", "glue", "grid",
           "headline", "plan", "run", "run_all", "summary_table"]
