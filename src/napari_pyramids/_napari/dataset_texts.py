"""What the Pyramid Builder says about plates, label images and other datasets.

Qt-free and napari-free, like :mod:`.texts`; names from the data are passed through as they
are and shown in plain-text labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..dataset_build import BUILT, COMPLETE, DatasetProgress, DatasetReport
from ..datasets import Dataset
from .texts import READY

if TYPE_CHECKING:
    from .scope import Scope


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def images_text(images: int, labels: int) -> str:
    """``4 images`` or ``4 images + 1 label image``."""
    text = _count(images, "image")
    return f"{text} + {_count(labels, 'label image')}" if labels else text


def dataset_entry(layer_name: str, dataset: Dataset) -> str:
    """How the picker lists a layer showing a whole dataset: ``plate [plate, 4 images]``."""
    labels = sum(len(image.labels) for image in dataset.images)
    return f"{layer_name} [{dataset.node.kind}, {images_text(len(dataset.images), labels)}]"


def dataset_build_text(dataset_root: Path, image: Path, whole: bool, complete: bool) -> str:
    """The summary's first line for a build of several images."""
    scope = (
        f"Builds every image of {dataset_root.name} and its label images with these parameters"
        if whole
        else f"Builds {image.name} and its label images to as many levels"
    )
    first = f"{image.relative_to(dataset_root)}" if whole else image.name
    if complete:
        return f"{scope}; images already complete are skipped ({first} is)."
    return f"{scope}; images already complete are skipped. Planned for {first}:"


def dataset_progress_text(step: DatasetProgress, cancelling: bool) -> str | None:
    """The status while a dataset builds; None keeps the status (while cancelling)."""
    if cancelling:
        return None
    blocks = f", block {step.blocks_done} of {step.blocks_total}" if step.blocks_total else ""
    return f"Building: {step.images_done} of {_count(step.images_total, 'image')} done{blocks}"


def dataset_end_text(report: DatasetReport) -> str:
    """The status once a dataset build ended: the totals, and the first problem in full."""
    totals = report.table().splitlines()[-1]
    problems = [r for r in report.results if not r.ok and r.message]
    if report.cancelled:
        kept = sum(r.status in (BUILT, COMPLETE) for r in report.results)
        totals = (
            f"Cancelled: {totals}. The {_count(kept, 'image')} built or complete keep their "
            "levels; every other image is as it was."
        )
    elif problems:
        totals = f"Built with problems: {totals}."
    elif report.dataset.is_one_image and report.results and report.results[0].levels:
        image, labels = report.results[0], len(report.results) - 1
        totals = (
            f"Built {image.levels} levels of {report.dataset.root.name} and its "
            f"{_count(labels, 'label image')}."
        )
    else:
        totals = f"Built: {totals}."
    if problems:
        first = problems[0]
        totals += f"\n{first.name}: {first.status}: {first.message}"
    return totals


def dataset_failure_text(reason: str) -> str:
    """The status when a dataset build could not start or stopped on an error."""
    return f"Build failed: {reason}"


def preview_of_dataset(dataset_root: Path, image: Path) -> str:
    """The refusal of a preview for a layer that shows a whole plate."""
    return (
        f"The preview shows one image, and this layer shows all of {dataset_root.name}: open "
        f"one of its images (e.g. {image}) to preview its pyramid, or build them all."
    )


def scope_text(scope: Scope | None) -> str:
    """The info line above the image's for a layer showing a whole dataset; else empty."""
    if scope is None or scope.dataset is None:
        return ""
    dataset = scope.dataset
    labels = sum(len(image.labels) for image in dataset.images)
    return (
        f"{dataset.describe()}: {images_text(len(dataset.images), labels)}; parameters "
        f"shown for {scope.image.relative_to(dataset.root)}:"
    )


def ready_text(scope: Scope | None) -> str:
    """The status once a build can start: a layer showing a whole plate has no preview."""
    if scope is None or scope.dataset is None:
        return READY
    return (
        f"Ready: Build pyramid builds every image of {scope.dataset.root.name}, several at "
        "a time; Cancel stops them at their next block."
    )
