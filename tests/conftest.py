"""Shared test settings: one torch thread (2-core machines oversubscribe badly), no bars."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")
torch.set_num_threads(1)


@pytest.fixture
def smoke(tmp_path):
    """Factory of smoke-profile configs writing into a temporary results store."""
    from ddlib import RunConfig

    def make(**overrides):
        overrides.setdefault("progress", False)
        return RunConfig.resolve("smoke", results_dir=str(tmp_path / "results"), **overrides)

    return make
