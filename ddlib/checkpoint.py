"""Per-round checkpoints: written atomically, read with `weights_only=True`.

A checkpoint holds only tensors and plain Python values (no pickled objects), so loading one
can never run code; a truncated or corrupted file is reported and treated as missing.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .utils import atomic_write, display_path


def save(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temp file in the same folder, fsync, rename; an OSError names `path`."""
    atomic_write(path, lambda f: torch.save(state, f), what="checkpoint ")


def load(path: Path) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None (with a warning naming it) when it is unreadable."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, refused global: all mean "redo"
        warnings.warn(f"ignoring unreadable checkpoint {display_path(path)} ({type(err).__name__}: {err}); "
                      "its round will be recomputed", stacklevel=2)
        return None


def load_resized(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """load_state_dict after giving every parameter the saved shape (heads grow each round).
    Each parameter keeps its requires_grad flag (frozen rows stay frozen)."""
    for name, saved in state_dict.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        current = getattr(owner, leaf, None)
        if isinstance(current, nn.Parameter) and current.shape != saved.shape:
            setattr(owner, leaf, nn.Parameter(torch.empty_like(saved, device=current.device),
                                              requires_grad=current.requires_grad))
    module.load_state_dict(state_dict, strict=True)
