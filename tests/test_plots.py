"""Every exhibit of ddlib.plots renders to a PNG from smoke results (no pixel comparison)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ddlib import RunConfig, plots, results, run  # noqa: E402


@pytest.fixture(scope="module")
def smoke_pair(tmp_path_factory):
    """iCaRL and iCaRL+DD smoke runs, in the folder the analysis tests share."""
    folder = tmp_path_factory.getbasetemp() / "analysis_smoke_results"
    return [run(RunConfig.resolve("smoke", method="icarl", dd=dd, results_dir=str(folder),
                                  progress=False), verbose=False) for dd in (False, True)]


def png(fig: Figure) -> bytes:
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == []  # the pyplot handle is closed: no double display
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = buffer.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    return data


def test_accuracy_curves_and_ablation(smoke_pair):
    folder = smoke_pair[0]["config"]["results_dir"]
    frame = results.load(folder)
    png(plots.accuracy_curves(frame))
    png(plots.accuracy_curves(smoke_pair, methods=["icarl"]))  # records work too
    png(plots.ablation(folder))
    with pytest.raises(ValueError, match="no results for method"):
        plots.accuracy_curves(frame, methods=["bic"])


def test_class_accuracy(smoke_pair):
    name = smoke_pair[0]["class_names"][0]  # learned in round 1
    png(plots.class_accuracy(smoke_pair, name))
    with pytest.raises(ValueError, match="is not in dataset"):
        plots.class_accuracy(smoke_pair, "baby")


def test_confusion_heatmap_and_pair_share(smoke_pair):
    png(plots.confusion_heatmap(smoke_pair[1]))
    png(plots.confusion_heatmap(smoke_pair[0], round_idx=1, rule="cnn", normalize=False))
    png(plots.pair_superclass_share(smoke_pair[1]))
    with pytest.raises(ValueError, match="baseline"):
        plots.pair_superclass_share(smoke_pair[0])


@pytest.mark.slow
def test_gradcam_grid(smoke_pair):
    fig = plots.gradcam_grid(*smoke_pair, num_images=1)
    png(fig)
    assert len(fig.axes) == 2 * len(smoke_pair[0]["rounds"])
    with pytest.raises(ValueError, match="GradCamSeries"):
        plots.gradcam_grid(smoke_pair[0])


def test_no_hierarchy_is_a_clear_error(smoke_pair):
    flat = {**smoke_pair[1], "coarse": None, "coarse_names": None}
    with pytest.raises(ValueError, match="no superclass map"):
        plots.pair_superclass_share(flat)
    png(plots.confusion_heatmap(flat))  # still drawable, just not grouped
    png(plots.class_accuracy(flat, flat["class_names"][0]))  # no sibling marks
