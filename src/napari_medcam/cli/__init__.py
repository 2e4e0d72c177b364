"""The ``napari-medcam`` command line: one module per verb, `common` for what they share."""

from napari_medcam.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
