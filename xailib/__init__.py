"""xailib: a reproducible companion to four papers on explaining CNN image classifiers.

Every method is a folder on one shared floor. Where each thing lives:

The floor (every method imports from here, never from another method's folder)
    xailib.checks      validation at the public boundary: models, images, targets, layers, numbers
    xailib.layers      dotted layer names, tensor hooks, context managers that restore a model
    xailib.batching    chunks under a memory cap, the choice of a batched way, batched predictions
    xailib.metrics     Spearman/Pearson, IoU, pointing game, deletion/insertion curves, bootstrap CIs
    xailib.baselines   every comparison method by name (Captum, grad-cam, zennit); randomisation and removal tests
    xailib.attacks     PGD, FGSM
    xailib.data        ConceptWorld, Fashion-MNIST, ImageNet folders, concept sets (xailib.data.concepts)
    xailib.models      the zoo with checksummed checkpoints, torchvision by name, training, Subjects (what a
                       notebook runs on: the zoo, or a torchvision model on an image folder)
    xailib.results     saving figures and tables with JSON sidecars; the paper-vs-ours table (paper_table)
    xailib.plotting    image grids, the heat-map overlay, mask overlays
    xailib.reproduce   the papermill runner behind ``make reproduce``

The methods
    xailib.gap         gAP: hierarchical decomposition (Eqs. 2-5, the evidence tree, its notebooks' experiments)
"""

__version__ = "0.1.0"

from xailib.utils import resolve_device, seed_everything  # noqa: E402,F401
