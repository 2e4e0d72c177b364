"""The cohort manifest: which run settings made a folder, and where every slide stands.

``OUT/manifest.json`` is written by the client only (one writer, atomically, after
every slide), so it is always whole. It records the settings that make results
comparable — the Med-CAM config, level, target, tiling and the classifier's
fingerprint — and, per slide, its path, folder, status (done, failed, running,
interrupted), reason and seconds. A rerun trusts a slide as finished only when its
own files are all there and readable, its ``result.json`` with the same settings hash
(the manifest may lag a crash by one slide, files may have been deleted or damaged);
everything else is redone. Another settings hash is refused unless forced, and a
manifest whose fields are not of their types is refused (it may be hand-edited).

The config's fields were renamed to the glossary's words (issue 21): a manifest written
before names them the old way and is read in the new words, and the hash is computed
with the old names (`renamed.as_before`), so that such a cohort resumes unchanged.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_medcam.batch.changes import option_changes
from napari_medcam.batch.outputs import slide_outputs_valid
from napari_medcam.engine.renamed import as_before, upgraded
from napari_medcam.io import jsonable, write_atomic

MANIFEST = "manifest.json"
FORMAT = "napari-medcam cohort 1"
SLIDES_DIR = "slides"
DONE, FAILED, RUNNING, INTERRUPTED = "done", "failed", "running", "interrupted"
STATUSES = ("new", DONE, FAILED, RUNNING, INTERRUPTED)


def settings_hash(settings: dict[str, Any]) -> str:
    """Short stable hash of the run settings (sorted JSON), the config's fields spelled
    as before the glossary: renaming a field must not make a cohort look changed."""
    config = settings.get("config")
    if isinstance(config, dict):
        settings = {**settings, "config": as_before(config)}
    text = json.dumps(jsonable(settings), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


#: what a slide id (its folder's name under ``--out/slides``) may be: what `id_for` makes
SLIDE_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def check_slide_id(slide_id: Any) -> str:
    """``slide_id`` if it is a plain folder name, else ValueError: a hand-edited or
    untrusted manifest must never make a slide's files land outside the output folder."""
    if not isinstance(slide_id, str) or not SLIDE_ID.match(slide_id):
        raise ValueError(
            f"slide id {slide_id!r} is not a plain folder name (letters, digits, _ and -)"
        )
    return slide_id


def check_record(slide_id: str, rec: Any) -> None:
    """ValueError unless a slide record has the fields batch reads, of their types (a
    hand-edited manifest must give one clear line, not a traceback mid-run)."""
    if not isinstance(rec, dict) or not isinstance(rec.get("path"), str):
        raise ValueError(f"slide {slide_id!r} has no path")
    if rec.get("status", "new") not in STATUSES:
        raise ValueError(f"slide {slide_id!r} has status {rec['status']!r}, not one of {STATUSES}")
    if not isinstance(rec.get("reason", ""), str):
        raise ValueError(f"slide {slide_id!r} has a reason that is not text")
    seconds = rec.get("seconds", 0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError(f"slide {slide_id!r} has seconds {seconds!r}, not a number")


@dataclass
class Manifest:
    """``manifest.json`` of a cohort output folder, in memory."""

    out: Path
    settings: dict[str, Any]
    classifier: dict[str, Any]
    slides: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str = field(default_factory=_now)

    @property
    def hash(self) -> str:
        return settings_hash(self.settings)

    @classmethod
    def load(cls, out: Path) -> Manifest | None:
        """The folder's manifest, None if there is none; ValueError if it is not ours."""
        path = out / MANIFEST
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
            slides = data["slides"]
            for key in ("settings", "classifier", "slides"):
                if not isinstance(data[key], dict):
                    raise ValueError(f"{key!r} is not a mapping")
            for sid, rec in slides.items():
                # a key is a folder name under --out: never a path that leaves it
                check_record(check_slide_id(sid), rec)
            settings = data["settings"]
            if isinstance(settings.get("config"), dict):  # written before the glossary?
                settings = {**settings, "config": upgraded(settings["config"])}
            return cls(out, settings, data["classifier"], slides, data["created"])
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as err:
            raise ValueError(
                f"{path} is not a napari-medcam cohort manifest ({err}); "
                "choose another --out folder, or pass --overwrite to start this one over"
            ) from None

    def save(self) -> None:
        data = {
            "format": FORMAT,
            "created": self.created,
            "updated": _now(),
            "settings_hash": self.hash,
            "settings": self.settings,
            "classifier": self.classifier,
            "slides": self.slides,
        }
        text = json.dumps(jsonable(data), indent=1)
        write_atomic(self.out / MANIFEST, lambda tmp: tmp.write_text(text), overwrite=True)

    def folder(self, slide_id: str) -> Path:
        return self.out / SLIDES_DIR / check_slide_id(slide_id)

    def id_for(self, path: Path) -> str:
        """The slide's folder name: kept from an earlier run, else its file name's stem
        (made safe, and unique with a hash of the path when two slides share it)."""
        for sid, rec in self.slides.items():
            if rec["path"] == str(path):
                return sid
        stem = path.name.split(".")[0] or "slide"
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", stem)
        sid = base
        if sid in self.slides:
            sid = f"{base}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
        return sid

    def add(self, path: Path) -> str:
        sid = self.id_for(path)
        self.slides.setdefault(sid, {"path": str(path), "status": "new"})
        return sid

    def update(self, slide_id: str, **facts: Any) -> None:
        self.slides[slide_id].update(facts, updated=_now())

    def finished(self, slide_id: str) -> bool:
        """Whether the slide's outputs are all there, readable, and made with these settings."""
        return slide_outputs_valid(self.folder(slide_id), self.hash) == ""


def open_manifest(
    out: Path, settings: dict[str, Any], classifier: dict[str, Any], force: bool
) -> tuple[Manifest, bool]:
    """The folder's manifest for a run with ``settings`` (a new one if there is none).

    Returns (manifest, started_over). Different settings are a ValueError naming
    the differences, unless ``force``: then the old records are dropped and every
    slide is redone (the old outputs are replaced slide by slide).
    """
    old = None
    try:
        old = Manifest.load(out)
    except ValueError:
        if not force:
            raise
    if old is not None and old.hash == settings_hash(settings):
        old.classifier = classifier
        return old, False
    if old is not None and not force:
        diff = option_changes(old.settings, settings)
        raise ValueError(
            f"{out} holds a cohort explained with other settings ("
            + "; ".join(diff[:6])
            + ("; …" if len(diff) > 6 else "")
            + "): pass --overwrite to redo every slide with the new ones, or choose another --out"
        )
    return Manifest(out, settings, classifier), old is not None
