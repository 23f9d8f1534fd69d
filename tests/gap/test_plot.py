"""gAP's figures (xailib.gap.plot) and the part-mask key (xailib.plotting): what they mark is computed from the
tables, never written in."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from xailib.gap.plot import identical_curves, plot_channel_removal  # noqa: E402
from xailib.plotting import overlay_masks, part_colours, part_mask_figure  # noqa: E402


def _removal(lrp_s4=0.5):
    rows = []
    for layer, lrp in (("f.s3", 0.5), ("f.s4", lrp_s4)):
        for m, a in (("gAP", 0.5), ("LRP", lrp), ("Conductance", 0.3), ("Random", 0.9)):
            rows += [{"layer": layer, "method": m, "n_removed": n, "accuracy": a if n else 1.0} for n in (0, 1, 2)]
    return pd.DataFrame(rows)


def test_identical_curves_by_hand():
    assert identical_curves(_removal(), "LRP") == {"f.s3": True, "f.s4": True}
    assert identical_curves(_removal(0.5 + 1e-6), "LRP") == {"f.s3": True, "f.s4": False}
    assert identical_curves(_removal(), "Missing") == {"f.s3": False, "f.s4": False}


def test_fig9_marks_lrp_equal_to_gap_only_where_it_is():
    fig = plot_channel_removal(_removal(0.45))
    labels = fig.axes[-1].get_legend().get_texts()
    assert "LRP = gAP (identical curve)" in [t.get_text() for t in labels]
    notes = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    assert notes == [["LRP = gAP\n(identical curve)"], []]  # stage 3 equal, stage 4 not
    plt.close(fig)
    fig = plot_channel_removal(_removal(0.45).query("layer == 'f.s4'"))
    assert "LRP" in [t.get_text() for t in fig.axes[-1].get_legend().get_texts()] and not fig.axes[0].texts
    plt.close(fig)


def test_overlay_masks_takes_given_colours():
    img = torch.zeros(3, 2, 2)
    masks = torch.tensor([[[True, False], [False, False]]])
    out = overlay_masks(img, masks, alpha=1.0, colours=[[0.0, 1.0, 0.0]])
    assert out[:, 0, 0].tolist() == [0.0, 1.0, 0.0] and out[:, 1, 1].tolist() == [0.0, 0.0, 0.0]
    assert len(np.unique(part_colours(13).round(4), axis=0)) == 13


def test_part_mask_figure_has_a_colour_key_of_the_parts_shown():
    from xailib.data.conceptworld import ConceptWorld

    world = ConceptWorld(size=32, seed=0)
    scenes = world.render(world.sample(6, split="test", seed=0))
    fig = part_mask_figure(scenes, [0, 1])
    shown = sorted({p for i in (0, 1) for p in range(len(world.part_names)) if scenes.part_masks[i][p].any()})
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [world.part_names[p] for p in shown]
    colours = part_colours(len(world.part_names))
    assert np.allclose([h.get_facecolor()[:3] for h in legend.legend_handles], colours[shown])
    plt.close(fig)
