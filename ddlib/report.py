"""What a run prints about its rounds: one table, whether the rounds were trained just now
or read back from the results store (so a run page shows its per-round log either way)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ROUND_HEADER = f"{'round':>5} {'classes':>7} {'acc_cnn':>8} {'acc_nme':>8} {'time_s':>7}"


def round_row(record: dict[str, Any]) -> str:
    """One round's line under `ROUND_HEADER`: classes seen, both rules' top-1 accuracy (%)
    and the round's training time (s)."""
    return (f"{record['round']:>5} {record['classes_seen']:>7} {record['acc_cnn']:>8.2f} "
            f"{record['acc_nme']:>8.2f} {record['time']['total']:>7.1f}")


def round_table(records: Iterable[dict[str, Any]]) -> str:
    """`ROUND_HEADER` and a `round_row` per record (a result's `rounds`)."""
    return "\n".join([ROUND_HEADER, *(round_row(r) for r in records)])
