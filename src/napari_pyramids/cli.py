"""``napari-pyramids build | info | sample | gui``: a thin shell over the core engine.

Every refusal is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import BuildCancelled, PyramidError, visible_text
from .pyramid.names import AUTO, EDGES, METHOD_NAMES

if TYPE_CHECKING:
    from .options import BuildOptions

EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130
# What a shell reports for a process ended by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141


def _levels(text: str) -> int | str:
    if text == AUTO:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer or 'auto'") from None


def _count(text: str) -> int:
    """A number of things, at least one (images at once, processes)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _storage_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. region=eu-west-1)")
    return key.strip(), value


def _add_storage_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--storage-option", type=_storage_option, action="append", default=[],
        metavar="KEY=VALUE",
        help="object-store setting for a URL beyond the AWS_* environment variables, e.g. "
        "endpoint=http://127.0.0.1:9000 or region=eu-west-1 (repeatable)",
    )  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """argparse reporting a bad argument in one line and exit status 2, like every refusal."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"napari-pyramids: error: {message}; see '{self.prog} --help'\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="napari-pyramids",
        description="Build multiscale pyramids for OME-Zarr images in place.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser(
        "build",
        help="write the lower-resolution levels of an image, or of every image of a plate, "
        "well, collection or folder",
    )
    build.add_argument(
        "zarrurl", help="path or URL (s3://, gs://) of an OME-Zarr image group; a local path may "
        "also be a plate, well, bioformats2raw collection, or a folder of images",
    )  # fmt: skip
    build.add_argument(
        "--levels", type=_levels, default="auto",
        help="total number of levels including level 0, or 'auto' (until the smallest level "
        "is about 256 px in Y and X; default)",
    )  # fmt: skip
    build.add_argument("--factor", type=int, default=2, help="Y/X coarsening per level (2)")
    build.add_argument("--z-factor", type=int, default=1, help="Z coarsening per level (1)")
    build.add_argument(
        "--method", choices=METHOD_NAMES, default=None,
        help="reducer; default mean for intensity images, mode for label images",
    )  # fmt: skip
    build.add_argument("--chunks", default=None, help="chunk shape, e.g. 1,1,512,512")
    build.add_argument("--edge", choices=EDGES, default="trim", help="border windows (trim)")
    build.add_argument("--overwrite", action="store_true", help="replace existing levels")
    build.add_argument("--memory", default=None, help="memory budget, e.g. 512MiB (256MiB)")
    build.add_argument("--workers", type=int, default=None, help="parallel blocks (CPU cores)")
    build.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help="run the blocks on a dask.distributed scheduler, e.g. tcp://10.0.0.1:8786",
    )  # fmt: skip
    build.add_argument(
        "--not-labels", action="store_true",
        help="treat an image detected as labels as an intensity image (allows mean)",
    )  # fmt: skip
    build.add_argument(
        "--skip-labels", action="store_true",
        help="leave the images' label images as they are (by default they get as many levels)",
    )  # fmt: skip
    build.add_argument(
        "--images-at-once", type=_count, default=None, metavar="N",
        help="images of a dataset built at the same time, sharing the memory budget "
        "(default: 8, or twice the workers if more)",
    )  # fmt: skip
    build.add_argument(
        "--processes", type=_count, default=None, metavar="N",
        help="worker processes building the images of a dataset (default: one per core, "
        "at most 8, for datasets of many images; 1: all in this process)",
    )  # fmt: skip
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_storage_options(build)

    update = commands.add_parser(
        "update",
        help="recompute only the parts of the levels that depend on level-0 data changed since "
        "the build (of an image, or of every image of a plate, well, collection or folder)",
    )
    update.add_argument(
        "zarrurl", help="path or URL (s3://, gs://) of an OME-Zarr image group with a pyramid; "
        "a local path may also be a plate, well, collection or folder",
    )  # fmt: skip
    update.add_argument("--memory", default=None, help="memory budget, e.g. 512MiB (256MiB)")
    update.add_argument("--workers", type=int, default=None, help="parallel blocks (CPU cores)")
    update.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help="run the blocks on a dask.distributed scheduler, e.g. tcp://10.0.0.1:8786",
    )  # fmt: skip
    update.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_storage_options(update)

    info = commands.add_parser(
        "info", help="print the levels of an image, or the images of a plate, well or folder"
    )
    info.add_argument(
        "zarrurl", help="path or URL (s3://, gs://, https://) of an OME-Zarr image; a local "
        "path may also be a plate, well, collection or folder",
    )  # fmt: skip
    _add_storage_options(info)

    sample = commands.add_parser("sample", help="write a sample image (level 0 only)")
    sample.add_argument("output", help="path of the new image group")
    sample.add_argument(
        "--format", type=int, choices=(2, 3), default=2, help="zarr format: 2 (NGFF 0.4) or 3"
    )
    sample.add_argument("--size", type=int, default=2048, help="Y and X size (2048)")

    gui = commands.add_parser("gui", help="open napari with the Pyramid Builder")
    gui.add_argument("path", nargs="?", help="image to open; default: the sample image")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        status = _run(argv)
        # Flush here, where a closed pipe can still be handled, not at interpreter exit.
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # The reader of our output went away (``| head``): stop quietly, as POSIX tools do.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("napari-pyramids: interrupted", file=sys.stderr)
        return EXIT_CANCELLED


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except PyramidError as exc:
        print(f"napari-pyramids: error: {visible_text(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (BuildCancelled, KeyboardInterrupt):
        print("napari-pyramids: cancelled; the image is unchanged", file=sys.stderr)
        return EXIT_CANCELLED


def _silence_stdout() -> None:
    """Point stdout at the null device, so that the exit's own flush cannot fail again."""
    import os

    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


def _build(args: argparse.Namespace) -> int:
    from .datasets import find_images
    from .storage import open_store
    from .untrusted import URL_SCHEME

    options = _options(args)
    storage_options = dict(args.storage_option)
    if URL_SCHEME.match(args.zarrurl):
        # Plates, wells, folders and label images kept in step are found on local paths
        # only: a URL is built as the one image it names.
        store = open_store(args.zarrurl, storage_options)
        store.check_writable()
        status = _build_image(args, options, store)
        _warn_labels_out_of_step(store)
        return status
    if storage_options:
        open_store(args.zarrurl, storage_options)  # refuses storage options on a path
    dataset = find_images(args.zarrurl)
    if dataset.is_one_image and (args.skip_labels or not dataset.images[0].labels):
        store = open_store(args.zarrurl)
        status = _build_image(args, options, store)
        _warn_labels_out_of_step(store)
        return status
    return _build_dataset(args, options, dataset)


def _options(args: argparse.Namespace) -> BuildOptions:
    from .options import BuildOptions

    return BuildOptions(
        num_levels=args.levels,
        coarsening_xy=args.factor,
        coarsening_z=args.z_factor,
        method=args.method,
        chunksize=args.chunks,
        edge=args.edge,
        overwrite=args.overwrite,
        labels=False if args.not_labels else None,
        memory_budget=args.memory,
        workers=args.workers,
    )


def _build_image(args: argparse.Namespace, options: BuildOptions, store: Any) -> int:
    """One image, as a pyramid build always was: a bar over blocks, then its levels."""
    from .engine import iter_build
    from .images import open_image

    image = open_image(store)
    original = _metadata_bytes(image)
    build = iter_build(store, options, scheduler=args.scheduler)
    bar = None
    finished = False
    try:
        for step in build:
            if bar is None and not args.quiet:
                from tqdm import tqdm  # 40 ms of imports: only when a bar is shown

                bar = tqdm(total=step.total, unit="block", desc="building", file=sys.stderr)
            if bar is not None:
                bar.update(step.done - bar.n)
        finished = True
    except KeyboardInterrupt:
        build.close()  # an unpublished build is rolled back here
        if not _published(image, original, options):
            raise
        # Ctrl-C during the clean-up that follows the publish: the pyramid is complete.
        print(
            "napari-pyramids: interrupted after the new levels were published; the pyramid is "
            "complete (the next build removes what the clean-up left)",
            file=sys.stderr,
        )
    finally:
        if bar is not None:
            # A build refused midway (a crafted chunk file) erases its bar, so the terminal
            # shows the one error line and no half-drawn bar above it.
            bar.leave = finished
            bar.close()
        build.close()
    return _info(args)


def _build_dataset(args: argparse.Namespace, options: BuildOptions, dataset: Any) -> int:
    """Every image of a dataset: one bar (images and blocks), then a summary table."""
    from .dataset_build import FAILED, build_dataset, labels_warnings, summary_table

    bar = None
    if not args.quiet:
        from tqdm import tqdm  # 40 ms of imports: only when a bar is shown

        count = len(dataset.images) if args.skip_labels else dataset.image_count
        bar = tqdm(total=0, unit="block", desc=f"images 0/{count}", file=sys.stderr)
    finished = []

    def progress(step: Any) -> None:
        if step.finished is not None:
            finished.append(step.finished)
        if bar is not None:
            bar.total = step.blocks_total
            bar.n = step.blocks_done
            bar.set_description(f"images {step.images_done}/{step.images_total}", False)
            bar.refresh()

    try:
        report = build_dataset(
            dataset, options, with_labels=not args.skip_labels,
            images_at_once=args.images_at_once, processes=args.processes,
            progress=progress, scheduler=args.scheduler,
        )  # fmt: skip
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print(visible_text(summary_table(finished, cancelled=True), keep_newlines=True))
        print(
            "napari-pyramids: interrupted; every image is complete or as it was. Run the same "
            "command again to build the rest.",
            file=sys.stderr,
        )
        return EXIT_CANCELLED
    finally:
        if bar is not None:
            bar.close()
    print(visible_text(dataset.describe()))
    print(visible_text(report.table(), keep_newlines=True))
    for line in labels_warnings(report):
        print(f"napari-pyramids: warning: {visible_text(line)}", file=sys.stderr)
    if report.cancelled:
        return EXIT_CANCELLED
    if report.ok:
        return 0
    return 1 if report.count(FAILED) else EXIT_BAD_INPUT


def _warn_labels_out_of_step(zarrurl: Any) -> None:
    """After building one image or one label image: say if its labels are now out of step."""
    from .datasets import labels_out_of_step
    from .images import open_image

    for mismatch in labels_out_of_step(open_image(zarrurl)):
        print(f"napari-pyramids: warning: {visible_text(mismatch.message)}", file=sys.stderr)


def _published(image: Any, original: bytes | None, options: BuildOptions) -> bool:
    """Whether an interrupted build of ``image`` got as far as publishing its levels."""
    from .ome.image import read_image
    from .pyramid.plan import level_factors, num_levels_for

    if _metadata_bytes(image) == original:
        return False  # rolled back, or never got to the publish
    levels = num_levels_for(image, options, level_factors(image, options))
    return len(read_image(image.store).level_paths) >= levels


def _metadata_bytes(image: Any) -> bytes | None:
    from .untrusted import MAX_JSON_BYTES

    return image.store.get(image.metadata_file, MAX_JSON_BYTES)


def _info(args: argparse.Namespace) -> int:
    from .info import describe_path

    text = describe_path(args.zarrurl, dict(args.storage_option))
    print(visible_text(text, keep_newlines=True))
    return 0


def _sample(args: argparse.Namespace) -> int:
    from ._napari.sample_data import write_sample_image

    path = write_sample_image(args.output, zarr_format=args.format, size=args.size)
    print(path)
    return 0


def _gui(args: argparse.Namespace) -> int:
    from ._napari.launch import open_viewer

    open_viewer(args.path)
    return 0


def _update(args: argparse.Namespace) -> int:
    """Every image the path holds (with its label images), one line each."""
    storage_options = dict(args.storage_option)
    unchanged = _unchanged_image(args.zarrurl, storage_options)
    if unchanged is not None:
        print(visible_text(unchanged))
        return 0
    from .datasets import find_images
    from .storage import open_store
    from .untrusted import URL_SCHEME

    if URL_SCHEME.match(args.zarrurl):
        targets: list[tuple[str, Any]] = [(args.zarrurl, args.zarrurl)]
    else:
        if storage_options:
            open_store(args.zarrurl, storage_options)  # refuses storage options on a path
        dataset = find_images(args.zarrurl)
        targets = []
        for image in dataset.images:
            targets.append((image.name, image.path))
            targets += [(image.label_name(n), image.label_path(n)) for n in image.labels]
    status = 0
    for name, path in targets:
        try:
            report = _update_image(args, path, storage_options)
        except PyramidError as exc:
            if len(targets) == 1:
                raise
            print(f"{name}: refused: {visible_text(str(exc))}", file=sys.stderr)
            status = max(status, EXIT_BAD_INPUT)
            continue
        print(visible_text(report.describe()))
    return status


def _unchanged_image(zarrurl: str, storage_options: dict[str, str]) -> str | None:
    """The report of an image folder without labels found unchanged read-only, before numpy,
    zarr or the dataset finder are imported; None when the full update must decide."""
    from .changes import UNCHANGED, UpdateReport, unchanged_since_record
    from .storage import LocalStore
    from .untrusted import URL_SCHEME, check_image_path

    if storage_options or URL_SCHEME.match(zarrurl):
        return None
    try:
        store = LocalStore(check_image_path(zarrurl))
    except PyramidError:
        return None
    if store.exists("labels") or not unchanged_since_record(store):
        return None
    return UpdateReport(str(store.describe()), UNCHANGED).describe()


def _update_image(args: argparse.Namespace, path: Any, storage_options: dict[str, str]) -> Any:
    from .update import iter_update

    gen = iter_update(
        path,
        memory_budget=args.memory,
        workers=args.workers,
        scheduler=args.scheduler,
        storage_options=storage_options or None,
    )
    bar = None
    try:
        while True:
            step = next(gen)
            if bar is None and not args.quiet and step.total:
                from tqdm import tqdm  # 40 ms of imports: only when a bar is shown

                bar = tqdm(total=step.total, unit="unit", desc="updating", file=sys.stderr)
            if bar is not None:
                bar.update(step.done - bar.n)
    except StopIteration as stop:
        return stop.value
    finally:
        if bar is not None:
            bar.close()
        gen.close()


_COMMANDS = {"build": _build, "update": _update, "info": _info, "sample": _sample, "gui": _gui}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
