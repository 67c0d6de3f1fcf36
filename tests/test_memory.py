"""Herding selection and the fixed-budget exemplar memory."""

from __future__ import annotations

import math

import numpy as np
import torch

from ddlib.memory import ExemplarMemory, herding


def test_herding_picks_the_hand_computed_ranking():
    # Unit vectors at 0, 10, 50, 90, 130 degrees, scaled by different norms (herding
    # normalises first). mu = (0.3970, 0.5411). Squared distances ||mu - (phi_i + S)/k||^2:
    # k=1: .6565 .4806 [.1110] .3681 1.1317 -> 2;  k=2: .2051 .1788 - [.1226] .2082 -> 3
    # k=3: [.0250] .0323 - - .2493 -> 0;  k=4: - .0707 - - [.0300] -> 4;  k=5 -> 1
    angles = [0, 10, 50, 90, 130]
    norms = [1.0, 2.0, 3.0, 0.5, 1.0]
    feats = torch.tensor([[n * math.cos(math.radians(a)), n * math.sin(math.radians(a))]
                          for a, n in zip(angles, norms)])
    assert herding(feats, 5) == [2, 3, 0, 4, 1]
    assert herding(feats, 2) == [2, 3]  # a prefix of the full ranking


def test_herding_ties_go_to_lowest_index():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert herding(feats, 4) == [0, 1, 2, 3]


def test_memory_budget_split_and_prefix_reduction():
    mem = ExemplarMemory(10)
    assert mem.quota(3) == 3  # floor(10 / 3); one slot stays empty
    mem.add(0, np.array([5, 1, 7, 2]))
    mem.add(1, np.array([9, 8, 6, 3]))
    mem.reduce(mem.quota(4))  # two more classes arrive: 2 each
    assert mem.ranked[0].tolist() == [5, 1] and mem.ranked[1].tolist() == [9, 8]
    assert mem.indices().tolist() == [5, 1, 9, 8]
    assert mem.indices([1]).tolist() == [9, 8]
