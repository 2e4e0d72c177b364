"""Slide formats through maintained readers, with files made here: a generic tiled TIFF
(tiffslide), an Aperio-like SVS (OpenSlide), an OME-TIFF (tiffslide + tifffile's OME-XML)
and a DICOM WSI written by wsidicom. Each opens lazily with the level metadata written
into it (µm/px, magnification, downsamples) and gives back the level-0 pixels written.
No vendor's own scanner file is used: none can be made or downloaded here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_medcam.cli import main
from napari_medcam.io import read_mask_tiff
from napari_medcam.io import slide_backends as backends
from napari_medcam.io.slides import open_slide, opens_lazily
from napari_medcam.plugin.reader import get_dicom_reader, get_slide_reader, read_slide

MPP = 0.25
SHAPE = (1000, 1200, 3)
REGION = (130, 270, 300, 410)  # y, x, h, w in level-0 pixels


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    """Noise, so that a misplaced or resampled read cannot match by chance."""
    return np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)


def _pyramid(data: np.ndarray, n: int = 3) -> list[np.ndarray]:
    return [np.ascontiguousarray(data[:: 2**i, :: 2**i]) for i in range(n)]


def write_generic(path: Path, data: np.ndarray) -> Path:
    """A tiled sub-IFD pyramid with the pixel size in the TIFF resolution tags."""
    levels = _pyramid(data)
    with tifffile.TiffWriter(path) as tw:
        for i, lv in enumerate(levels):
            extra = {"resolution": (1e4 / MPP,) * 2, "resolutionunit": "CENTIMETER"}
            tw.write(
                lv,
                tile=(256, 256),
                photometric="rgb",
                compression="zlib",
                subifds=len(levels) - 1 if i == 0 else None,
                subfiletype=1 if i else 0,
                **(extra if i == 0 else {}),
            )
    return path


def write_svs_like(path: Path, data: np.ndarray) -> Path:
    """Aperio's layout: level 0, a stripped thumbnail, then the lower levels, each page
    described as 'Aperio Image Library ...', with MPP and AppMag in the first."""
    head = "Aperio Image Library v12.0.15\n"
    levels = _pyramid(data)
    h, w = data.shape[:2]
    first = f"{head}{w}x{h} [0,0 {w}x{h}] (256x256) -> {w}x{h}|AppMag = 40|MPP = {MPP}"
    with tifffile.TiffWriter(path) as tw:
        tw.write(levels[0], tile=(256, 256), photometric="rgb", compression="zlib",
                 description=first, metadata=None)  # fmt: skip
        tw.write(data[::8, ::8], photometric="rgb", description=head, metadata=None)
        for lv in levels[1:]:
            tw.write(lv, tile=(256, 256), photometric="rgb", compression="zlib",
                     description=head, metadata=None)  # fmt: skip
    return path


def write_ome(path: Path, data: np.ndarray) -> Path:
    """An OME-TIFF pyramid (sub-IFDs) recording 0.5 µm/px in its OME-XML only."""
    levels = _pyramid(data)
    with tifffile.TiffWriter(path, ome=True) as tw:
        for i, lv in enumerate(levels):
            tw.write(
                lv,
                tile=(256, 256),
                photometric="rgb",
                subifds=len(levels) - 1 if i == 0 else None,
                subfiletype=1 if i else 0,
                metadata={"axes": "YXS", "PhysicalSizeX": 2 * MPP, "PhysicalSizeY": 2 * MPP}
                if i == 0
                else None,
            )
    return path


def write_dicom(folder: Path, data: np.ndarray) -> Path:
    """A two-level DICOM WSI (uncompressed, 128² tiles, 20× objective) written by wsidicom
    from arrays: wsidicomizer pins an older wsidicom, so the source is made here."""
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    from wsidicom import WsiDicom
    from wsidicom.codec import Encoder
    from wsidicom.geometry import Size, SizeMm
    from wsidicom.instance import ImageData, WsiInstance
    from wsidicom.metadata import (
        Equipment,
        Image,
        ImageType,
        Label,
        Objectives,
        OpticalPath,
        Patient,
        Pyramid,
        Series,
        Slide,
        Study,
        WsiMetadata,
    )
    from wsidicom.metadata.sample import SlideSample
    from wsidicom.metadata.schema.dicom import WsiMetadataDicomSchema
    from wsidicom.source import Source

    tile = 128

    class Level(ImageData):
        transfer_syntax = ExplicitVRLittleEndian
        samples_per_pixel, bits, photometric_interpretation = 3, 8, "RGB"
        imaged_size = image_coordinate_system = lossy_compression = transcoder = None
        thread_safe = True
        tile_size = Size(tile, tile)

        image_size = property(lambda self: Size(self.pixels.shape[1], self.pixels.shape[0]))
        pixel_spacing = property(lambda self: SizeMm(self.mpp / 1000, self.mpp / 1000))

        def __init__(self, pixels: np.ndarray, mpp: float) -> None:
            self.pixels, self.mpp = pixels, mpp
            super().__init__(Encoder.create(self.transfer_syntax, 8, "RGB"))

        def get_decoded_tile(self, point, z, path, cache=True) -> np.ndarray:
            out = np.zeros((tile, tile, 3), np.uint8)
            part = self.pixels[point.y * tile : (point.y + 1) * tile,
                               point.x * tile : (point.x + 1) * tile]  # fmt: skip
            out[: part.shape[0], : part.shape[1]] = part
            return out

        def get_encoded_tile(self, point, z, path) -> bytes:
            return self.encoder.encode(self.get_decoded_tile(point, z, path))

    uid = generate_uid
    meta = WsiMetadata(
        study=Study(uid=uid()),
        series=Series(uid=uid()),
        patient=Patient(),
        equipment=Equipment(),
        slide=Slide(samples=[SlideSample(identifier="s", uid=uid())]),
        pyramid=Pyramid(
            image=Image(),
            optical_paths=[OpticalPath(objective=Objectives(objective_power=20))],
            uid=uid(),
        ),
        label=Label(),
        frame_of_reference_uid=uid(),
        dimension_organization_uids=[uid()],
    )
    instances = [
        WsiInstance.create_instance(
            Level(lv, MPP * 2**i),
            WsiMetadataDicomSchema().dump(meta, ImageType.VOLUME, False),
            ImageType.VOLUME,
            0,
        )
        for i, lv in enumerate(_pyramid(data, 2))
    ]

    class Arrays(Source):
        base_dataset = property(lambda self: instances[0].dataset)
        level_instances = property(lambda self: instances)
        label_instances = overview_instances = thumbnail_instances = property(lambda self: [])
        annotation_instances = property(lambda self: [])

        def close(self) -> None:
            """Nothing to close: the pixels are arrays."""

    folder.mkdir()
    with WsiDicom(Arrays()) as wsi:
        wsi.save(folder)
    return folder


#: (writer, file name, vendor, µm/px, magnification, downsamples)
FORMATS = {
    "generic-tiff": (write_generic, "generic.tif", "tiff", MPP, None, [1, 2, 4]),
    "svs-like": (write_svs_like, "aperio.svs", "aperio", MPP, 40, [1, 2, 4]),
    "ome-tiff": (write_ome, "pyramid.ome.tif", "ome", 2 * MPP, None, [1, 2, 4]),
    "dicom-wsi": (write_dicom, "dicom-wsi", "dicom", MPP, 20, [1, 2]),
}


@pytest.fixture(scope="module")
def made(tmp_path_factory, pixels) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("formats")
    return {key: f[0](folder / f[1], pixels) for key, f in FORMATS.items()}


@pytest.mark.parametrize("kind", FORMATS)
def test_each_format_opens_lazily_with_its_own_level_metadata(kind, made, pixels, monkeypatch):
    _, _, vendor, mpp, magnification, downsamples = FORMATS[kind]
    with open_slide(made[kind]) as slide:
        assert slide.vendor == vendor
        assert slide.mpp == pytest.approx(mpp) and slide.magnification == magnification
        assert slide.downsamples == pytest.approx(downsamples)
        assert slide.level_mpp == pytest.approx([mpp * f for f in downsamples])
        assert slide.shape == SHAPE and slide.rgb
        assert slide.region(0)[0].numblocks[:2] != (1, 1)  # read in tiles, not whole
        view, origin, f = slide.region(0, REGION)
        assert origin == REGION[:2] and f == 1
        y, x, h, w = REGION
        np.testing.assert_array_equal(np.asarray(view), pixels[y : y + h, x : x + w])
        coarse, (y1, x1), f1 = slide.region(1, REGION)
        assert f1 == 2 and (y1, x1) == (y // 2, x // 2)
        half = pixels[::2, ::2][y1 : y1 + h // 2, x1 : x1 + w // 2]
        np.testing.assert_array_equal(np.asarray(coarse), half)


@pytest.mark.parametrize("kind", ["svs-like", "dicom-wsi"])
def test_a_region_reads_only_the_chunks_it_touches(kind, made, monkeypatch):
    """OpenSlide and wsidicom levels are dask arrays with one read_region per chunk."""
    reads: list[tuple[int, int, int, int]] = []
    real = backends._RegionArray.__getitem__

    def counted(self, key):
        out = real(self, key)
        reads.append((key[0].start, key[1].start, *out.shape[:2]))
        return out

    monkeypatch.setattr(backends, "REGION_CHUNK", 256)
    monkeypatch.setattr(backends._RegionArray, "__getitem__", counted)
    with open_slide(made[kind]) as slide:
        assert slide.levels[0].chunksize[:2] == (256, 256)
        np.asarray(slide.region(0, (200, 230, 100, 100))[0])  # across four chunks
    # one read per chunk touched, of its part of the region only (dask fuses the slice)
    assert sorted(reads) == [(200, 230, 56, 26), (200, 256, 56, 74), (256, 230, 44, 26),
                             (256, 256, 44, 74)]  # fmt: skip


def test_napari_reader_claims_every_format_and_gives_lazy_levels(made, tmp_path):
    for kind, path in made.items():
        reader = get_dicom_reader(str(path)) if path.is_dir() else get_slide_reader(str(path))
        assert reader is read_slide, kind
        ((levels, meta, layer_type),) = reader(str(path))
        assert layer_type == "image" and meta["multiscale"] and meta["rgb"]
        assert [lv.shape[:2] for lv in levels][:2] == [SHAPE[:2], (500, 600)]
        assert meta["metadata"]["format"] == FORMATS[kind][2]
        assert meta["metadata"]["mpp"] == pytest.approx(FORMATS[kind][3])
        assert meta["metadata"]["magnification"] == FORMATS[kind][4]
    assert get_dicom_reader(str(tmp_path)) is None  # an empty folder is no slide
    assert get_slide_reader(str(tmp_path / "a.png")) is None


def test_folders_and_lone_dicom_files_are_named_for_what_they_are(made, tmp_path):
    with pytest.raises(ValueError, match="is a folder, not a slide file"):
        open_slide(tmp_path)
    one_file = next(made["dicom-wsi"].iterdir())
    with pytest.raises(ValueError, match="one file of a DICOM WSI: open its folder"):
        open_slide(one_file)
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"not a slide at all")
    with pytest.raises(ValueError, match="cannot read .* as a slide"):
        open_slide(junk)
    assert not opens_lazily(junk) and opens_lazily(made["dicom-wsi"])


def test_cli_explains_a_region_of_a_dicom_wsi_in_level_0_pixels(made, tmp_path, capsys):
    out = tmp_path / "mask.tif"
    args = [str(made["dicom-wsi"]), "--region", "200,300,224,224", "--steps", "3"]
    assert main(["explain", *args, "--level", "0", "--out", str(out)]) == 0
    mask, meta = read_mask_tiff(out)
    assert mask.shape == (224, 224) and meta["origin_level0"] == [200.0, 300.0]
    assert meta["mpp"] == pytest.approx(MPP)
    assert main(["explain", str(tmp_path), "--out", str(tmp_path / "m.tif")]) == 2
    assert "is a folder, not a slide file" in capsys.readouterr().err
