"""What every panel shares: layout helpers, notifications, the session's running jobs."""

from __future__ import annotations

import logging
import time
from typing import Any

from magicgui.widgets import Label
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

logger = logging.getLogger(__name__)


def add_rows(box: QWidget, *widgets: Any) -> QVBoxLayout:
    """Lay ``widgets`` (Qt or magicgui) out top to bottom in ``box``."""
    lay = QVBoxLayout(box)
    lay.setContentsMargins(6, 4, 6, 6)
    lay.setSpacing(2)
    for w in widgets:
        lay.addWidget(w if isinstance(w, QWidget) else w.native)
    return lay


def wrap(label: Label | QLabel, rich: bool = False) -> None:
    """Wrapping, selectable text (rich text with ``rich``)."""
    native = label.native if isinstance(label, Label) else label
    native.setWordWrap(True)
    native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
    if rich and isinstance(native, QLabel):
        native.setTextFormat(Qt.TextFormat.RichText)


class Session:
    """The widget's lifetime and its background jobs, shared by the panels.

    Qt slots may run after the widget's C++ object is gone (the viewer closing):
    ``closed`` tells them to do nothing. ``job``/``worker`` is the running
    explanation, ``check_job``/``check_worker`` the running edited-mask check.
    """

    def __init__(self) -> None:
        self.closed = False
        self.job: Any = None
        self.worker: Any = None
        self.check_job: Any = None
        self.check_worker: Any = None

    @property
    def explaining(self) -> bool:
        return self.worker is not None

    @property
    def checking(self) -> bool:
        return self.check_worker is not None

    def stop(self, timeout: float = 0.0) -> bool:
        """Mark closed and cancel any run and check; True when their threads have let go.

        Cancelling is immediate: each worker stops at its next step or tile and
        drops its result. Closing the viewer calls this without waiting (the GUI
        thread never blocks on a worker); ``timeout`` > 0 waits that long, for
        callers that must know (tests, scripts).
        """
        self.closed = True
        for job in (self.job, self.check_job):
            if job is not None:
                job.cancel.set()
        deadline = time.monotonic() + timeout
        while not self._let_go():
            if time.monotonic() >= deadline:
                if timeout > 0:
                    logger.warning("Med-CAM worker did not stop within %.0f s", timeout)
                return False
            time.sleep(0.01)
        return True

    def _let_go(self) -> bool:
        run = self.job is None or self.job.done.is_set()
        run = run or (self.worker is not None and not self.worker.is_running)
        return run and (self.check_job is None or self.check_job.done.is_set())


class Notifier:
    """napari notifications, silent once the session is closed."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        if not self.session.closed:
            show_error(message)

    def warning(self, message: str) -> None:
        from napari.utils.notifications import show_warning

        if not self.session.closed:
            show_warning(message)

    def info(self, message: str) -> None:
        from napari.utils.notifications import show_info

        if not self.session.closed:
            show_info(message)
