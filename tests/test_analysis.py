"""Analyses of PROTOCOL 5 on hand-made confusion matrices and on a smoke run's results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ddlib import RunConfig, analysis, run
from ddlib.metrics import error_split, top_k_accuracy

# Classes 0, 1 old; 2, 3 new; superclasses: {0, 2} and {1, 3}.
COARSE = [0, 1, 0, 1]
COUNTS = np.array([
    [5, 1, 2, 0],   # old: 0->1 other superclass (forgetting 1), 0->2 same (confusion 2)
    [0, 6, 3, 4],   # old: 1->2 other (forgetting 3), 1->3 same (confusion 4)
    [7, 1, 8, 2],   # new: 2->0 same (confusion 7), 2->1 and 2->3 other superclass (other 3)
    [0, 5, 1, 9],   # new: 3->1 same (confusion 5), 3->2 other superclass (other 1)
])


def fake_result(rounds: list[tuple[list[int], np.ndarray, np.ndarray]], *, dd: bool = False,
                order: int = 0, coarse=COARSE, inference: str = "cnn", pairs=None) -> dict:
    """A result record with the keys the analyses read; rounds = (new_classes, cnn, nme)."""
    records, seen = [], 0
    for i, (new, cnn, nme) in enumerate(rounds, start=1):
        seen += len(new)
        rec = {"round": i, "classes_seen": seen, "new_classes": new,
               "acc_cnn": 0.0, "acc_nme": 0.0,
               "confusion_cnn": np.asarray(cnn).tolist(), "confusion_nme": np.asarray(nme).tolist()}
        if pairs and i in pairs:
            rec["similar_pairs"] = pairs[i]
        records.append(rec)
    n = len(COARSE)
    return {"config": {"method": "ucir", "dd": dd, "similar_k": 1, "order": order,
                       "increment": 2, "init_classes": 2, "dataset": "synthetic",
                       "profile": "smoke"},
            "inference": inference, "class_order": list(range(n)),
            "class_names": ["baby", "bus", "girl", "train"][:n],
            "coarse": coarse, "coarse_names": None if coarse is None else ["people", "vehicles"],
            "rounds": records}


def two_rounds(counts: np.ndarray, **kw) -> dict:
    first = np.array([[9, 1], [2, 8]])
    return fake_result([([0, 1], first, first), ([2, 3], counts, counts)], **kw)


def test_error_split_hand_made():
    split = error_split(COUNTS, np.array(COARSE), num_old=2)
    assert split == {"confusion": 18, "forgetting": 4, "other": 4,
                     "old_same": 6, "old_diff": 4, "new_same": 12, "new_diff": 4}
    assert sum(split[k] for k in ("old_same", "old_diff", "new_same", "new_diff")) == \
        COUNTS.sum() - np.trace(COUNTS)
    # round 1: every image is new, so nothing counts as forgetting
    assert error_split(COUNTS, np.array(COARSE), num_old=0)["forgetting"] == 0


def test_confusion_forgetting_per_round_and_table2():
    base = two_rounds(COUNTS)
    per_round = analysis.confusion_forgetting(base)
    counts = per_round.loc[2, ["errors", "confusion", "forgetting", "other"]]
    assert counts.tolist() == [26, 18, 4, 4]
    # round 1: the two classes lie in different superclasses, nothing is old
    assert per_round.loc[1, ["confusion", "forgetting", "other"]].tolist() == [0, 0, 3]

    better = COUNTS.copy()
    better[0, 1], better[0, 0] = 0, 6  # +DD: one forgetting error fewer
    table = analysis.table2(base, two_rounds(better, dd=True))
    assert list(table.columns) == [2]
    assert table.index.tolist() == [("confusion", "UCIR"), ("confusion", "UCIR+DD"),
                                    ("forgetting", "UCIR"), ("forgetting", "UCIR+DD")]
    assert table[2].tolist() == [18, 18, 4, 3]

    # two orders per side: per-order mean, rounded half up (4.5 -> 5), and said so
    table = analysis.table2([base, two_rounds(better, order=1)],
                            [two_rounds(better, dd=True), two_rounds(better, dd=True, order=1)],
                            types=("forgetting", "other"))
    assert table.loc[("forgetting", "UCIR"), 2] == 4  # mean of 4 and 3 = 3.5 -> 4
    assert table.loc[("forgetting", "UCIR+DD"), 2] == 3
    assert "mean over orders [0, 1]" in table.attrs["note"]


def test_table2_rejects_bad_input():
    base = two_rounds(COUNTS)
    with pytest.raises(ValueError, match="no superclass map"):
        analysis.confusion_forgetting(two_rounds(COUNTS, coarse=None))
    with pytest.raises(ValueError, match="expected \\+DD"):
        analysis.table2(base, base)
    with pytest.raises(ValueError, match="orders"):
        analysis.table2(base, two_rounds(COUNTS, dd=True, order=1))


def test_class_accuracy_hand_made():
    cnn1, nme1 = np.array([[6, 4], [0, 10]]), np.array([[8, 2], [1, 9]])
    nme2 = COUNTS.copy()
    result = fake_result([([0, 1], cnn1, nme1), ([2, 3], COUNTS, nme2)], inference="nme")
    track = analysis.class_accuracy(result, "baby")  # iCaRL-like: NME by default
    assert track["round"].tolist() == [1, 2]
    assert track["accuracy"].tolist() == [80.0, 62.5]  # 8/10, 5/8
    assert analysis.class_accuracy(result, "baby", rule="cnn")["accuracy"].tolist() == [60.0, 62.5]
    late = analysis.class_accuracy(result, "girl")  # learned in round 2: 8 / 18
    assert late["round"].tolist() == [2] and late["accuracy"].iloc[0] == pytest.approx(44.44)
    arrivals = analysis.superclass_arrivals(result, "baby")
    assert arrivals[["class", "round"]].values.tolist() == [["baby", 1], ["girl", 2]]


def test_unknown_class_name_lists_valid_names():
    with pytest.raises(ValueError, match="'lion' is not in .*'baby'"):
        analysis.class_accuracy(two_rounds(COUNTS), "lion")


def test_pair_share_and_chance_hand_made():
    pairs = {2: [[2, 0, 0.5], [3, 0, 0.9]]}  # girl->baby same superclass, train->baby not
    result = two_rounds(COUNTS, dd=True, pairs=pairs)
    table = analysis.similar_pairs(result)
    assert table[["new_name", "old_name", "same_superclass"]].values.tolist() == [
        ["girl", "baby", True], ["train", "baby", False]]
    share = analysis.pair_superclass_share(result)
    assert share[["round", "pairs", "same", "share", "chance"]].values.tolist() == [
        [2, 2, 1, 50.0, 50.0]]  # each new class has 1 of 2 old classes in its superclass
    with pytest.raises(ValueError, match="baseline"):
        analysis.similar_pairs(two_rounds(COUNTS))


def test_confusion_by_superclass_groups_and_normalises():
    frame = analysis.confusion_by_superclass(two_rounds(COUNTS))
    assert list(frame.index) == ["baby", "girl", "bus", "train"]
    assert frame.attrs["superclasses"] == [("people", 0, 1), ("vehicles", 2, 3)]
    np.testing.assert_allclose(frame.sum(axis=1), 100.0)
    assert frame.loc["girl", "baby"] == pytest.approx(100 * 7 / 18)


def test_summaries_over_orders():
    rows = [{"run": "icarl" + ("+dd" if dd else ""), "method": "icarl", "dd": dd,
             "similar_k": k, "order": o, "increment": 2, "profile": "smoke",
             "dataset": "synthetic", "round": r, "classes_seen": 2 * r,
             "acc_cnn": 0.0, "acc_nme": 0.0, "acc": acc, "path": f"{dd}-{k}-{o}"}
            for dd, k, o, accs in ((False, 1, 0, (80, 60)), (False, 1, 1, (70, 50)),
                                   (True, 1, 0, (80, 64)), (True, 2, 0, (80, 66)))
            for r, acc in enumerate(accs, start=1)]
    frame = pd.DataFrame(rows)
    curves = analysis.accuracy_summary(frame)
    base = curves[~curves["dd"]].sort_values("classes_seen")
    assert base["mean"].tolist() == [75.0, 55.0] and base["n"].tolist() == [2, 2]
    assert base["std"].iloc[0] == pytest.approx(np.std([80, 70], ddof=1))
    assert base["avg_inc_mean"].iloc[0] == pytest.approx(65.0)
    assert curves[curves["dd"]]["mean"].tolist() == [80.0, 64.0]  # k=2 left out
    abl = analysis.ablation_summary(frame)
    assert abl["arm"].astype(str).tolist() == ["B", "1", "2"]
    assert abl["final_mean"].tolist() == [55.0, 64.0, 66.0]
    with pytest.raises(ValueError, match="mix datasets"):
        analysis.accuracy_summary(pd.concat([frame, frame.assign(dataset="cifar100")]))


def test_dd_gains_and_their_prose_numbers():
    rows = [{"run": "x", "method": m, "dd": dd, "similar_k": k, "order": o, "increment": 2,
             "profile": "smoke", "dataset": "synthetic", "round": r, "classes_seen": 2 * r,
             "acc_cnn": 0.0, "acc_nme": 0.0, "acc": acc, "path": f"{m}-{dd}-{k}-{o}"}
            for m, dd, k, o, accs in (("ucir", False, 1, 0, (80, 60)), ("ucir", False, 1, 1, (70, 50)),
                                      ("ucir", True, 1, 0, (80, 64)), ("ucir", True, 1, 1, (70, 56)),
                                      ("ucir", True, 3, 0, (80, 99)),  # another arm: left out
                                      ("lwf", False, 1, 0, (60, 40)), ("lwf", True, 1, 0, (60, 38)))
            for r, acc in enumerate(accs, start=1)]
    gains = analysis.dd_gains(pd.DataFrame(rows))
    assert gains.index.tolist() == [(2, "LwF"), (2, "UCIR")]  # the paper's method order
    # UCIR: avg B = mean(70, 60) = 65, avg +DD = mean(72, 63) = 67.5; finals 55 vs 60
    assert gains.loc[(2, "UCIR")].tolist() == [65.0, 67.5, 55.0, 60.0, 2.5, 5.0]
    assert gains.loc[(2, "LwF"), "avg gain"] == -1.0
    numbers = analysis.dd_gain_numbers(pd.DataFrame(rows))
    assert numbers == {"mean_gain": 0.75, "min_gain": -1.0, "max_gain": 2.5, "panels": 2.0,
                       "panels_gained": 1.0}


def test_top_k_accuracy_hand_made():
    scores = np.array([[0.1, 0.9, 0.0, 0.3],   # ranks: 1, 3, 0, 2
                       [0.5, 0.1, 0.2, 0.3],   # ranks: 0, 3, 2, 1
                       [0.0, 0.1, 0.2, 0.3]])  # ranks: 3, 2, 1, 0
    y = np.array([3, 2, 0])  # true class at rank 2, rank 3, rank 4
    assert top_k_accuracy(scores, y, k=1) == 0.0
    assert top_k_accuracy(scores, y, k=2) == 33.33
    assert top_k_accuracy(scores, y, k=3) == 66.67
    assert top_k_accuracy(scores, y, k=5) == 100.0  # capped at the 4 classes


def test_dd_gains_top5_reads_the_top5_column_and_refuses_results_without_it():
    rows = [{"run": "x", "method": "ucir", "dd": dd, "similar_k": 1, "order": 0,
             "increment": 2, "profile": "smoke", "dataset": "imagenet", "round": r,
             "classes_seen": 2 * r, "acc_cnn": acc, "acc_nme": 0.0, "acc": acc,
             "top5_cnn": top5, "top5_nme": 0.0, "top5": top5, "path": f"ucir-{dd}"}
            for dd, accs in ((False, ((50, 80), (40, 70))), (True, ((50, 80), (44, 76))))
            for r, (acc, top5) in enumerate(accs, start=1)]
    frame = pd.DataFrame(rows)
    assert analysis.dd_gains(frame).loc[(2, "UCIR"), "final gain"] == 4.0
    top5 = analysis.dd_gains(frame, top5=True).loc[(2, "UCIR")]
    assert top5.tolist() == [75.0, 78.0, 70.0, 76.0, 3.0, 6.0]
    assert analysis.dd_gains(frame, rule="cnn", top5=True).equals(
        analysis.dd_gains(frame, top5=True))
    frame.loc[frame["dd"], "top5"] = np.nan  # an older result, written without top-5
    with pytest.raises(ValueError, match=r"1 result\(s\) have no top-5 .* ucir-True"):
        analysis.dd_gains(frame, top5=True)


def test_table2_change_in_percent():
    better = COUNTS.copy()
    better[0, 1], better[0, 0] = 0, 6  # one forgetting error fewer: 4 -> 3
    table = analysis.table2(two_rounds(COUNTS), two_rounds(better, dd=True))
    assert analysis.table2_change(table) == {"confusion_change_pct": 0.0,
                                             "forgetting_change_pct": -25.0}


def test_figure1_class_is_the_first_round_class_that_falls_most_when_a_sibling_arrives():
    # Round 1: baby 9/10, bus 8/10. Round 2 brings girl (baby's sibling) and train (bus's).
    first = np.array([[9, 1], [2, 8]])
    second = np.zeros((4, 4), int)
    np.fill_diagonal(second, [3, 7, 10, 10])  # baby falls 90 -> 30, bus 80 -> 70
    second[0, 2], second[1, 3] = 7, 3
    result = fake_result([([0, 1], first, first), ([2, 3], second, second)])
    assert analysis.figure1_class(result) == "baby"
    second[0, 0], second[0, 2] = 10, 0  # now baby holds at 100 and bus falls most
    result = fake_result([([0, 1], first, first), ([2, 3], second, second)])
    assert analysis.figure1_class(result) == "bus"
    alone = fake_result([([0, 1], first, first), ([2, 3], second, second)], coarse=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="no first-round class has a superclass sibling"):
        analysis.figure1_class(alone)


# ----------------------------------------------------------------------------- smoke run


@pytest.fixture(scope="module")
def smoke_dd(tmp_path_factory):
    """iCaRL+DD smoke run; the folder is shared by the analysis, Grad-CAM and plot tests."""
    folder = tmp_path_factory.getbasetemp() / "analysis_smoke_results"
    cfg = RunConfig.resolve("smoke", method="icarl", dd=True, results_dir=str(folder),
                            progress=False)
    return run(cfg, verbose=False)


@pytest.mark.slow
def test_similar_pairs_match_the_stored_selection(smoke_dd):
    table = analysis.similar_pairs(smoke_dd)
    stored = [(rec["round"], *pair) for rec in smoke_dd["rounds"]
              for pair in rec.get("similar_pairs", [])]
    assert len(stored) > 0
    assert list(table[["round", "new", "old", "distance"]].itertuples(index=False, name=None)) \
        == [tuple(s) for s in stored]
    names, coarse = smoke_dd["class_names"], smoke_dd["coarse"]
    for row in table.itertuples():
        assert (row.new_name, row.old_name) == (names[row.new], names[row.old])
        assert row.same_superclass == (coarse[row.new] == coarse[row.old])
        rec = smoke_dd["rounds"][row.round - 1]
        assert row.new in rec["new_classes"] and row.old < rec["new_classes"][0]
    share = analysis.pair_superclass_share(smoke_dd)
    assert share["round"].tolist() == sorted(table["round"].unique())
    assert share["share"].between(0, 100).all() and share["chance"].between(0, 100).all()
