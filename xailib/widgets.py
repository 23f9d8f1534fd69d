"""The floor for the explorers' ipywidgets views (gAP, MACE, the additive explainer).

Each explorer is plain Python state that the tests drive, and a thin view that only renders the state and calls
its methods. :class:`StateView` is what every view shares: it displays as its ``widget``, and :meth:`StateView.act`
calls one method of the state, shows a ``ValueError`` or ``TypeError`` in red in ``status`` (the state stays as
it was, so a student's bad step loses nothing) and redraws. :func:`png_bytes` turns a matplotlib figure into the
bytes of an ``ipywidgets.Image``.
"""

from __future__ import annotations

import html
import io

__all__ = ["StateView", "png_bytes"]


class StateView:
    """Base of an explorer's view. Subclasses set ``self.widget`` (the whole view) and ``self.status`` (an
    ``ipywidgets.HTML``), and define ``render()``."""

    widget = None
    status = None

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def render(self) -> None:  # pragma: no cover - every view defines it
        raise NotImplementedError

    def _act(self, fn, *args) -> None:
        """Call ``fn(*args)`` (a method of the state); its error, if any, in red in ``status``; then redraw."""
        try:
            fn(*args)
            self.status.value = ""
        except (ValueError, TypeError) as exc:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"
        self.render()


def png_bytes(fig, dpi: int = 100, close: bool = True) -> bytes:
    """The PNG bytes of a matplotlib figure; a pyplot figure is closed after (``close``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return buf.getvalue()
