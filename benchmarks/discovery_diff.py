"""Print, as JSON, what layer discovery picks on every entry of the tile zoo.

For each entry of `napari_medcam.zoo.ZOO` (the CNN entries and the transformer entries;
the tile zoo has no 3-D entry, and the slide-level MIL zoo does not use layer discovery):
the classifier is loaded with its layers left to the engine (`zoo.load`), and the script
prints the activation-matching layers discovery chose, Grad-CAM's layer (the deepest of
them: `engine.saliency.gradcam` and the zoo evaluation use ``layers[-1]``), and how each
layer's output is read (``adaptation["activation_reshapes"]``: a transformer's tokens
reshaped to the patch grid; absent where a layer is used as it is).

It uses only what the engine exposed before and after commit 97c4112 (which changed
discovery for transformer blocks), so it runs against either version of the package:

    PYTHONPATH=/tmp/wt-old/src .venv/bin/python benchmarks/discovery_diff.py > old.json
    .venv/bin/python benchmarks/discovery_diff.py > new.json
    diff old.json new.json

Nothing is explained; one forward pass per entry (plus, in the new engine, one backward
pass on a random input for transformer blocks). ``--entries a,b`` restricts the entries.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch


def discovered(name: str) -> dict:
    from napari_medcam import zoo

    clf = zoo.load(name)
    layers = list(clf.layers)
    return {
        "layers": layers,
        "gradcam_layer": layers[-1] if layers else None,
        "reshapes": dict(clf.adaptation.get("activation_reshapes", {})),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", help="comma-separated zoo entries (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import napari_medcam
    from napari_medcam import zoo

    names = args.entries.split(",") if args.entries else list(zoo.ZOO)
    transformers = set(getattr(zoo, "TRANSFORMERS", ()))
    out = {
        "package": napari_medcam.__file__,
        "torch": torch.__version__,
        "entries": {
            n: {"kind": "transformer" if n in transformers else "cnn", **discovered(n)}
            for n in names
        },
    }
    json.dump(out, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
