"""The additive explainer's part contributions, as an ipywidgets view for teaching (Experiment 1, Fig. 5).

Two layers, as gAP's and MACE's explorers, so that everything the view shows can be driven (and tested) without
a browser:

* :class:`ExplorerState` -- plain Python state over one explained performer
  (:class:`xailib.explainer.experiments.PartStudy` and its held-out task). An image, an explainer (``baseline`` or
  ``ours``) and a part are selected. It gives the performer's score ``y_hat`` beside the explainer's
  ``sum_i alpha_i y_i + b``, the part contributions ``Contri_p = sum_{i in Omega_p} alpha_i y_i`` (and the
  filters of no part as ``"other"``), and the selected part's ConceptWorld mask on the image.
* :class:`Explorer` -- the ipywidgets view: image slider, explainer toggle, part dropdown, the image with the
  part's outline, the pie of part contributions and a header with the scores.

:func:`plot_view` draws the same view as a static figure, for notebooks run without a browser.
"""

from __future__ import annotations

import html

import matplotlib.pyplot as plt
import torch

from xailib.explainer.experiments import PartStudy, part_pies
from xailib.explainer.performers import BinaryTask
from xailib.explainer.plot import _pie, part_colours
from xailib.plotting import show_overlay
from xailib.widgets import StateView, png_bytes

__all__ = ["Explorer", "ExplorerState", "plot_view"]


class ExplorerState:
    """The explorer's state: a selected held-out image, explainer and part of one explained performer.

    Parameters
    ----------
    study : PartStudy
        :func:`xailib.explainer.experiments.explain_performer`'s result.
    task : BinaryTask
        The held-out task the study was evaluated on (its images, labels and part masks).
    explainer : str
        ``"ours"`` or ``"baseline"``.

    Examples
    --------
    >>> state = ExplorerState(study, test)
    >>> state.select_image(3); state.select_part("head")
    >>> state.contributions()         # {"head": ..., "legs": ..., "other": ...}
    """

    def __init__(self, study: PartStudy, task: BinaryTask, explainer: str = "ours"):
        if not isinstance(study, PartStudy):
            raise TypeError(f"study must be a PartStudy (explain_performer's result), got {type(study).__name__}.")
        if not isinstance(task, BinaryTask) or len(task.labels) != len(study.labels):
            raise ValueError("task must be the BinaryTask the study was evaluated on (the same held-out images).")
        self.study, self.task = study, task
        self.explainers = list(study.contributions)
        self.parts = list(study.groups) + ["other"]
        self._pies = {k: part_pies(study, range(len(study.labels)))[0][k] for k in self.explainers}
        self._image, self._explainer = 0, None
        self._part = self.parts[0]
        self.select_explainer(explainer)

    # -- selection ------------------------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return len(self.study.labels)

    @property
    def image_index(self) -> int:
        return self._image

    @property
    def explainer(self) -> str:
        return self._explainer

    @property
    def part(self) -> str:
        return self._part

    def select_image(self, index: int) -> None:
        """Select held-out image ``index`` (0..n_images-1)."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"index must be an int, got {index!r}.")
        if not 0 <= index < self.n_images:
            raise ValueError(f"Image {index} is out of range; give 0..{self.n_images - 1}.")
        self._image = index

    def select_explainer(self, name: str) -> None:
        """Show ``"ours"`` or ``"baseline"``."""
        if name not in self.explainers:
            raise ValueError(f"Unknown explainer {name!r}; give one of {', '.join(self.explainers)}.")
        self._explainer = name

    def select_part(self, part: str) -> None:
        """Outline ``part`` (one of :attr:`parts`; ``"other"`` outlines nothing)."""
        if part not in self.parts:
            raise ValueError(f"Unknown part {part!r}; the performer's filters were assigned to "
                             f"{', '.join(self.parts[:-1]) or 'no part'} (and 'other').")
        self._part = part

    # -- what the view shows --------------------------------------------------------------------------
    @property
    def image(self) -> torch.Tensor:
        return self.task.images[self._image]

    @property
    def label(self) -> str:
        return self.task.category if int(self.task.labels[self._image]) == 1 else "other"

    @property
    def performer_score(self) -> float:
        """``y_hat``: the performer's log-odds of the category."""
        return float(self.study.test.y_hat[self._image])

    @property
    def explainer_score(self) -> float:
        """``sum_i alpha_i y_i + b`` of the selected explainer."""
        return float(self.study.explained[self._explainer][self._image])

    def contributions(self) -> dict[str, float]:
        """``Contri_p`` of every part (and ``"other"``) for the selected image and explainer."""
        return dict(zip(self.parts, self._pies[self._explainer][self._image].tolist()))

    def part_mask(self, part: str | None = None) -> torch.Tensor | None:
        """The part's ConceptWorld mask ``[H, W]`` on the selected image (None for ``"other"``)."""
        part = self._part if part is None else part
        if part == "other":
            return None
        return self.task.part_masks[self._image, self.task.part_names.index(part)]

    def header(self) -> str:
        """The selection in words."""
        return (f"image {self._image} ({self.label}); performer y_hat = {self.performer_score:+.2f}, "
                f"{self._explainer} explainer {self.explainer_score:+.2f}; part {self._part}: "
                f"Contri = {self.contributions()[self._part]:+.2f}")


def _draw(axes, state: ExplorerState) -> None:
    show_overlay(axes[0], state.image, mask=state.part_mask())
    axes[0].set_title(f"{state.label}: y_hat {state.performer_score:+.1f}", fontsize=7)
    _pie(axes[1], state.contributions(), part_colours(state.parts),
         f"{state.explainer}: {state.explainer_score:+.1f}")
    axes[1].legend([p for p, v in state.contributions().items() if v > 0], fontsize=5, loc="center left",
                   bbox_to_anchor=(1.0, 0.5), frameon=False)


def plot_view(state: ExplorerState):
    """The view of the current selection as a static figure: the image with the part's outline, and the pie."""
    fig, axes = plt.subplots(1, 2, figsize=(4.4, 2.1))
    _draw(axes, state)
    fig.tight_layout()
    return fig


class Explorer(StateView):
    """An ipywidgets view of an :class:`ExplorerState`; it only renders the state and calls its methods.

    Attributes
    ----------
    widget : ipywidgets.VBox
    image_slider, explainer_toggle, part_dropdown
        The controls.
    header, status : ipywidgets.HTML
        The selection in words; the last error (red), empty after a good step.
    view : ipywidgets.Image
        The image with the part's outline beside the pie.
    """

    def __init__(self, state: ExplorerState):
        import ipywidgets as w

        if not isinstance(state, ExplorerState):
            raise TypeError(f"state must be an ExplorerState, got {type(state).__name__}.")
        self.state = state
        self.image_slider = w.IntSlider(value=state.image_index, min=0, max=max(0, state.n_images - 1),
                                        description="image", continuous_update=False)
        self.explainer_toggle = w.ToggleButtons(options=state.explainers, value=state.explainer,
                                                description="explainer")
        self.part_dropdown = w.Dropdown(options=state.parts, value=state.part, description="part")
        self.header, self.status = w.HTML(), w.HTML()
        self.view = w.Image(format="png", layout=w.Layout(width="440px"))
        self.image_slider.observe(lambda c: self._act(state.select_image, int(c["new"])), names="value")
        self.explainer_toggle.observe(lambda c: self._act(state.select_explainer, c["new"]), names="value")
        self.part_dropdown.observe(lambda c: self._act(state.select_part, c["new"]), names="value")
        self.widget = w.VBox([w.HBox([self.image_slider, self.part_dropdown]), self.explainer_toggle, self.header,
                              self.view, self.status])
        self.render()

    def render(self) -> None:
        """Redraw the header and the view from the state."""
        self.header.value = html.escape(self.state.header())
        self.view.value = png_bytes(plot_view(self.state))
