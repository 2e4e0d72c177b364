"""Noticing edits: the numbers shown for a mask go out of date the moment it changes.

The Result panel, the last check and the last comparison each describe one state of
a result layer's data, remembered by its content hash. A paint stroke (or new data)
marks them out of date at once; a short timer then compares hashes, and while
something is out of date it keeps comparing, so an undo back to that state (napari's
undo sends no event) clears the warning again.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal

from napari_medcam.plugin.layers import data_hash

#: ms after the last paint event before the content is hashed
SETTLE_MS = 150
#: ms between hashes while something shown is out of date (to notice an undo)
POLL_MS = 600


class EditWatcher(QObject):
    """Watches result layers; ``edited`` carries a layer whose content may have changed,
    ``painted`` one the user is painting on (out of date now, hashed shortly)."""

    edited = Signal(object)
    painted = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self._layers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._pending: weakref.WeakSet[Any] = weakref.WeakSet()
        self._polled: weakref.WeakSet[Any] = weakref.WeakSet()
        self._settle = QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(SETTLE_MS)
        self._settle.timeout.connect(self._flush)
        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._on_poll)

    def watch(self, layer: Any) -> None:
        if layer in self._layers:
            return
        self._layers.add(layer)
        layer.events.paint.connect(self._on_event)
        layer.events.data.connect(self._on_event)

    def poll(self, layer: Any, on: bool) -> None:
        """Keep hashing ``layer`` (something shown for it is out of date) or stop."""
        if on:
            self._polled.add(layer)
            if not self._poll.isActive():
                self._poll.start()
        else:
            self._polled.discard(layer)
            if not len(self._polled):
                self._poll.stop()

    def stop(self) -> None:
        for timer in (self._settle, self._poll):
            # RuntimeError: Qt deleted it with the widget, so it can no longer fire
            with contextlib.suppress(RuntimeError):
                timer.stop()

    def _on_event(self, event: Any) -> None:
        layer = getattr(event, "source", None)
        if layer is None:
            return
        self._pending.add(layer)
        self.painted.emit(layer)
        self._settle.start()

    def _flush(self) -> None:
        for layer in list(self._pending):
            self._pending.discard(layer)
            self.edited.emit(layer)

    def _on_poll(self) -> None:
        for layer in list(self._polled):
            self.edited.emit(layer)


def content_hash(layer: Any) -> str:
    """The hash a result's state is remembered by ("" for a mask kept on disk)."""
    return "" if getattr(layer, "multiscale", False) else data_hash(layer.data)
