"""Text in Qt: labels and notifications that show names from an image literally.

Text that may come from an image's metadata (layer names, paths, level names, errors) is
never interpreted as markup, and invisible and control characters are spelled out
(:func:`~napari_pyramids.errors.visible_text`).
"""

from __future__ import annotations

import html
from typing import Any

from magicgui.widgets import Label
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QLabel, QSizePolicy

from ...errors import visible_text


def notification_text(text: str) -> str:
    """``text`` as one line that a napari notification shows literally.

    Notifications are Qt labels in auto-detect mode: Qt renders a line as rich text if it
    sees a tag or an ``&lt;`` in it. Such a line is HTML-escaped and marked as rich text
    itself, whitespace kept, so Qt shows exactly the original characters.
    """
    line = visible_text(" ".join(text.split("\n")))
    if not Qt.mightBeRichText(line):
        return line
    return '<span style="white-space: pre-wrap">' + html.escape(line, quote=False) + "</span>"


def plain_label(name: str) -> Label:
    """A full-width, word-wrapped, selectable label that shows its text as plain text."""
    widget = Label(name=name, label="", value="")
    widget.native.setTextFormat(Qt.TextFormat.PlainText)
    widget.native.setWordWrap(True)
    widget.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    # Never squeezed below the wrapped text's height: a clipped refusal explains nothing.
    widget.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)
    widget.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    # Qt sizes a wrapped label's height for a width of its own choosing, not the width the
    # dock gives it; in a crowded dock the last lines were cut off.
    fit = _FitHeight(widget.native)
    widget.native.installEventFilter(fit)
    widget.changed.connect(lambda *_: fit.update())
    return widget


class _FitHeight(QObject):
    """Keeps a word-wrapped label at least as tall as its text wrapped at its width."""

    def __init__(self, label: QLabel) -> None:
        super().__init__(label)  # lives as long as the label
        self._label = label

    def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 (Qt names it)
        if event.type() == QEvent.Type.Resize:
            self.update()
        return False

    def update(self) -> None:
        label = self._label
        height = label.heightForWidth(label.width())
        if height > 0 and height != label.minimumHeight():
            label.setMinimumHeight(height)
