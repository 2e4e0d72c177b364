"""Reading and writing: images, slides, masks, GeoJSON — nothing here explains.

Everything that touches a file lives in this package, above the engine (which works on
arrays only): `images` (TIFF/PNG/JPEG in, mask TIFFs out), `slides` (pyramidal slides,
lazily), `geojson` (masks as QuPath polygons), `annotations` (QuPath polygons in),
`agreement` (evidence against them, tile by tile), `tiles` (tiles to fit an explainer on),
`atomic` (files that appear whole or not at all) and `jsonable` (values fit for JSON).
"""

from napari_medcam.io.agreement import Agreement, compare
from napari_medcam.io.annotations import Annotations, read_annotations
from napari_medcam.io.atomic import (
    atomic_path,
    atomic_paths,
    clean_stale_temps,
    write_atomic,
    write_files,
)
from napari_medcam.io.geojson import CLASS_COLORS, class_rgb, mask_polygons, mask_to_geojson
from napari_medcam.io.images import (
    IMAGE_SUFFIXES,
    PYRAMID_ABOVE,
    geojson_writer,
    mask_tiff_writer,
    read_image,
    read_mask_tiff,
    write_geojson,
    write_mask,
    write_mask_tiff,
)
from napari_medcam.io.jsonable import jsonable
from napari_medcam.io.slides import (
    SLIDE_SUFFIXES,
    Slide,
    is_pyramidal,
    open_slide,
    pyramid_writer,
    write_pyramid,
)
from napari_medcam.io.tiles import read_tiles

__all__ = [
    "Agreement",
    "Annotations",
    "CLASS_COLORS",
    "IMAGE_SUFFIXES",
    "PYRAMID_ABOVE",
    "SLIDE_SUFFIXES",
    "Slide",
    "atomic_path",
    "atomic_paths",
    "class_rgb",
    "clean_stale_temps",
    "compare",
    "geojson_writer",
    "is_pyramidal",
    "jsonable",
    "mask_polygons",
    "mask_tiff_writer",
    "mask_to_geojson",
    "open_slide",
    "pyramid_writer",
    "read_annotations",
    "read_image",
    "read_mask_tiff",
    "read_tiles",
    "write_atomic",
    "write_files",
    "write_geojson",
    "write_mask",
    "write_mask_tiff",
    "write_pyramid",
]
