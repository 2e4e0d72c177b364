"""``python -m napari_medcam.cli``: the ``napari-medcam`` command."""

import sys

from napari_medcam.cli.main import main

sys.exit(main())
