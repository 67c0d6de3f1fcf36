"""Similar-class selection (PROTOCOL 4.1 step 4) on hand-made class centres."""

from __future__ import annotations

import pytest
import torch

from ddlib.expert import select_similar_classes

# 1-D centres: new classes 4 at 0.0 and 5 at 10.0; old classes 0..3 at 1, 9.5, 2, 20.
NEW = torch.tensor([[0.0], [10.0]])
OLD = torch.tensor([[1.0], [9.5], [2.0], [20.0]])


def pairs(k):
    return [(c, o) for c, o, _ in select_similar_classes(NEW, OLD, [4, 5], [0, 1, 2, 3], k)]


def test_nearest_pairs_k1():
    assert pairs(1) == [(5, 1), (4, 0)]


def test_k2_skips_taken_classes():
    # sorted: (5,1) .5, (4,0) 1, (4,2) 2, (5,0)/(5,2) taken, (4,1) taken, (5,3) 10
    assert pairs(2) == [(5, 1), (4, 0), (4, 2), (5, 3)]


@pytest.mark.parametrize("k", [3, 4])
def test_fewer_old_classes_than_needed_uses_each_once(k):
    chosen = pairs(k)
    olds = [o for _, o in chosen]
    assert sorted(olds) == [0, 1, 2, 3] and len(set(olds)) == len(olds)


def test_k0_selects_nothing():
    assert pairs(0) == []


def test_distances_are_euclidean():
    got = select_similar_classes(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]),
                                 [1], [0], 1)
    assert got == [(1, 0, 5.0)]


def test_ties_break_by_new_then_old_label():
    new = torch.tensor([[0.0], [0.0]])
    old = torch.tensor([[1.0], [-1.0]])
    got = select_similar_classes(new, old, [2, 3], [0, 1], 1)
    assert [(c, o) for c, o, _ in got] == [(2, 0), (3, 1)]
