"""What the widget says about painted label images and pyramids older than their level 0.

Qt-free and napari-free, like :mod:`.texts`.
"""

from __future__ import annotations

from pathlib import Path

NOT_LABELS = (
    "Edit labels needs a multiscale labels layer of a label image picked above (napari "
    "cannot paint multiscale labels: a plain layer holding level 0 of the plane in view is "
    "added for painting)."
)
UPDATE_BUSY = "An update or a build is already running; wait for it or cancel it."
UPDATE_CANCELLING = "Cancelling the update at its next block…"
UPDATE_CANCELLED = (
    "Update cancelled: every level stays readable, some parts refreshed and some not yet. "
    "Click Update pyramid again to finish it."
)


def editing_text(name: str, shape: tuple[int, ...]) -> str:
    size = "×".join(str(n) for n in shape)
    return (
        f"Paint on {name!r} ({size} of level 0): each stroke is written to level 0; "
        "Update pyramid then refreshes the levels below."
    )


def written_text(root: Path) -> str:
    return (
        f"Painted edits written to level 0 of {root.name}; its pyramid is now older than "
        "level 0: click Update pyramid."
    )


def stale_text(root: Path) -> str:
    return (
        f"The pyramid of {root.name} is older than its level 0 (changed since it was built): "
        "click Update pyramid to refresh it."
    )


def unsaved_write_failed(root: Path, reason: str) -> str:
    return (
        f"Painted edits of {root.name} could not be written to level 0 ({reason}); nothing "
        "was started. Fix it and try again, or undo the edits."
    )


def write_failed(root: Path, reason: str) -> str:
    return (
        f"Painted edits of {root.name} could not be written to level 0 ({reason}); they stay "
        "in the layer and are written before its next build or update."
    )


def updated_text(root: Path, description: str) -> str:
    return f"Updated {root.name}: {description}"
