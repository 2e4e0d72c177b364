"""`load_torch_file`: the one way this package reads a ``torch.save`` file.

State dicts, classifier checkpoints, explainer files and fit checkpoints all come
through here, read with ``torch.load(weights_only=True)``: tensors and plain
containers only, no code runs. It lives in ``classifiers/`` (the bottom layer) so the
engine can use it too.

torch's own error for a file it refuses advises re-running with
``weights_only=False`` — running whatever code the file carries. That advice, and
torch's unpickling text, must never reach the user: failures become one line that
says what the file is not, with torch's exception dropped from the chain.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

#: torch's wording when ``weights_only`` refused an object in the file
_REFUSED = "Weights only load failed"


def load_torch_file(path: str | Path, what: str, map_location: str | torch.device = "cpu") -> Any:
    """The content of ``path``, read as data only; ValueError naming ``what`` it is not.

    ``what`` says what the file should be, with its article ("an explainer file").
    """
    try:
        with warnings.catch_warnings():  # torch's notes on its unpickler: not the user's
            warnings.filterwarnings("ignore", message=".*weights_only")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        if _REFUSED in str(err):
            reason = "it holds Python objects besides tensors, which are never loaded"
        else:
            reason = "it is damaged, or was not written by torch.save"
        raise ValueError(f"{path} is not {what}: {reason}") from None
