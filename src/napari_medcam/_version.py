"""The installed version, read once from the package metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-medcam")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"
