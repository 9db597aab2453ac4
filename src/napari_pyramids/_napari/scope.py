"""What a build started from a picked layer covers: its image alone, the image and its label
images, every image of the plate it belongs to, or a whole plate shown as one layer.

napari-ome-zarr opens a plate as one tiled layer per channel (plus one per label name),
whose source is the plate: such a layer stands for every image of the plate. A layer of one
image stands for that image, whose label images and plate a build can take along. Qt-free
and napari-free: it works on paths and the library's datasets.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from ..dataset_build import pyramid_complete
from ..datasets import Dataset, DatasetImage, find_images, label_names
from ..errors import PyramidError
from ..ome.image import OmeZarrImage
from ..ome.structure import COLLECTION, PLATE, WELL, read_node
from ..options import BuildOptions
from ..pyramid.plan import PyramidPlan, plan_pyramid
from ..storage import open_store
from .request import SAVE_A_COPY, check_existing_pyramid, check_writable

# Datasets a layer can show whole (napari-ome-zarr: a plate; a collection's series and a
# well's fields are layers whose source is the dataset too).
WHOLE_KINDS = (PLATE, WELL, COLLECTION)
# A field is three folders below its plate (plate/A/1/0), a field's label image five.
MAX_PLATE_DEPTH = 5


@dataclass(frozen=True)
class Scope:
    """What a picked layer lets a build cover.

    Attributes
    ----------
    image
        The image whose parameters and plan the widget shows (a dataset's first image).
    label_count
        How many label images a build can bring in step: the image's, or every image's of
        the dataset.
    dataset
        The plate, well or collection the picked layer shows as a whole, if it does.
    plate
        The plate (or collection) the picked image belongs to, if any.
    """

    image: Path
    label_count: int = 0
    dataset: Dataset | None = None
    plate: Path | None = None

    def build_path(self, with_labels: bool, whole_plate: bool) -> Path | None:
        """The path a dataset build takes, or None when the image alone is built."""
        if self.dataset is not None:
            return self.dataset.root
        if whole_plate and self.plate is not None:
            return self.plate
        if with_labels and self.label_count:
            return self.image
        return None


def dataset_shown(source_path: str | None) -> Dataset | None:
    """The plate, well or collection at a layer's source path, or None if it is not one."""
    if not source_path:
        return None
    try:
        node = read_node(open_store(source_path))
        if node.kind not in WHOLE_KINDS:
            return None
        return find_images(source_path)
    except PyramidError:
        return None


def image_count(dataset: Dataset) -> tuple[int, int]:
    """(images, label images) of a dataset, each image's label images counted apart."""
    return len(dataset.images), sum(len(image.labels) for image in dataset.images)


def first_image(dataset: Dataset) -> DatasetImage:
    """The image a dataset's parameters are chosen on: its first readable image."""
    readable = [e for e in dataset.images if e.problem is None]
    images = [e for e in readable if not e.is_label] or readable
    if not images:
        raise PyramidError(
            f"{dataset.root}: none of its images can be read ({dataset.images[0].problem})"
        )
    return images[0]


def dataset_scope(dataset: Dataset) -> Scope:
    """The scope of a layer showing ``dataset`` whole."""
    _, labels = image_count(dataset)
    return Scope(first_image(dataset).path, labels, dataset)


def image_scope(root: Path) -> Scope:
    """The scope of a layer showing the image (or label image) at ``root``."""
    labels = 0
    with contextlib.suppress(PyramidError):
        labels = len(label_names(open_store(root))[0])
    return Scope(root, labels, None, enclosing_plate(root))


def enclosing_plate(root: Path) -> Path | None:
    """The plate or bioformats2raw collection that lists the image at ``root``, if any."""
    if not isinstance(root, Path):  # an image in an object store: its own only
        return None
    for ancestor in list(root.parents)[:MAX_PLATE_DEPTH]:
        try:
            node = read_node(open_store(ancestor))
        except PyramidError:
            continue
        if node.kind not in (PLATE, COLLECTION):
            continue
        inside = root.relative_to(ancestor).parts
        for member in node.members:
            parts = Path(member).parts
            if inside[: len(parts)] == parts:
                return ancestor
    return None


def plan_for_dataset(image: OmeZarrImage, options: BuildOptions) -> PyramidPlan | None:
    """The plan of ``image`` in a dataset build, None if it is already complete (skipped).

    Raises
    ------
    PyramidError
        If the image would be refused: read-only, or the options do not fit it.
    """
    try:
        image.store.check_writable()
    except PyramidError as exc:
        raise PyramidError(f"{exc} {SAVE_A_COPY}") from None
    if not image.store.has_leftovers() and pyramid_complete(image, options):
        return None
    check_existing_pyramid(image, options)
    plan = plan_pyramid(image, options)
    if not plan.new_levels:
        raise PyramidError("1 level is level 0 alone: choose 2 or more levels to build a pyramid")
    check_writable(image)
    return plan
