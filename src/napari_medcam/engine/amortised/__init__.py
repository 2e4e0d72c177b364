"""Amortised Med-CAM: fit an explainer once per classifier, explain any tile in one pass.

`fit_explainer` / `iter_fit` (fit.py) train one class-conditioned network
(network.py) on the per-image objective over many tiles; `Explainer` and
`load_explainer` (file.py) keep it with the fingerprint of the classifier it is
for; `iter_explain_amortised` (explain.py) explains whole images with it, tile
verdicts failing closed and ``refine`` repairing the tiles that fail.
"""

from napari_medcam.engine.amortised.events import FitCancelled, FitEvent
from napari_medcam.engine.amortised.file import Explainer, fingerprint, load_explainer
from napari_medcam.engine.amortised.fit import fit_explainer, iter_fit

__all__ = [
    "Explainer",
    "FitCancelled",
    "FitEvent",
    "fingerprint",
    "fit_explainer",
    "iter_fit",
    "load_explainer",
]
