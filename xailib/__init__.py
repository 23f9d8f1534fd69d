"""xailib: a reproducible companion to four papers on explaining CNN image classifiers.

Modules
-------
xailib.layers      dotted layer names, tensor hooks, context managers that restore a model
xailib.data        ConceptWorld (procedural, with ground truth), Fashion-MNIST, ImageNet folders
xailib.models      the small model zoo with checksummed checkpoints, and torchvision by name
xailib.reproduce   the papermill runner behind ``make reproduce``
xailib.results     saving figures and tables with their JSON sidecars
"""

__version__ = "0.1.0"

from xailib.utils import resolve_device, seed_everything  # noqa: E402,F401
