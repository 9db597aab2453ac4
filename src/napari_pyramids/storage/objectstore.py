"""Images in object storage: S3 and S3-compatible servers, Google Cloud Storage, HTTP(S).

The requests are obstore's (the Rust ``object_store`` crate behind a small Python API, with
wheels for Linux, macOS and Windows): no S3 client of our own. It was chosen over zarr's
FsspecStore with s3fs by measurement: against the same local S3 server, obstore moved 1 MiB
objects 1.5x (writes) and 2.3x (reads) faster than s3fs's batched calls, its calls release the
GIL so block tasks on threads overlap their requests, and zarr-python ships a store on top
of it (``zarr.storage.ObjectStore``) for the layouts read through zarr.

Configuration is the one AWS tools use: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``)
for an S3-compatible server, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN``, ``AWS_REGION``, and ``AWS_PROFILE`` (read with boto3, when it is
installed); ``GOOGLE_*`` for Cloud Storage. ``storage_options`` add obstore's configuration
keys (``endpoint``, ``region``, ``access_key_id``, ``skip_signature``, ...) and its HTTP
client's (``allow_http``, ``timeout``, ``connect_timeout``, ...), and ``profile``.

HTTP(S) serves reads only: such an image can be read, shown and previewed, and a build on it
is refused before anything is attempted.

Objects are untrusted like files: a read learns an object's size from the response headers
before its body is fetched, so an object larger than any honest chunk is refused without
being downloaded. Every failure becomes one sentence saying what to fix (credentials,
permission, a missing bucket, an unreachable endpoint).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlsplit

from ..errors import PyramidError
from ..untrusted import ZARR_METADATA_NAMES
from .store import (
    BuildTransaction,
    ImageChanges,
    ImageHold,
    OversizedError,
    StorageUnavailable,
    Store,
    UrlPath,
    join,
)

# Each kind of URL, by scheme, and whether a build may write there.
_KINDS = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "http": "http", "https": "http"}
WRITABLE = frozenset({"s3", "gs"})
# Keys of ``storage_options`` for obstore's HTTP client rather than for the store.
_CLIENT_KEYS = frozenset({
    "allow_http", "allow_invalid_certificates", "connect_timeout", "default_content_type",
    "http1_only", "http2_only", "pool_idle_timeout", "pool_max_idle_per_host", "proxy_url",
    "timeout", "user_agent",
})  # fmt: skip
# A wrong endpoint must fail in seconds with one line, not after obstore's default 3 minutes
# of retries; transient 5xx errors are still retried a few times.
_RETRY = {"max_retries": 4, "retry_timeout": timedelta(seconds=30)}
_CLIENT_DEFAULTS = {"connect_timeout": "5s", "timeout": "120s"}
# S3 error codes, as servers spell them in their XML replies, by what the user must fix.
_CREDENTIAL_CODES = (
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
    "TokenRefreshRequired", "AuthorizationHeaderMalformed", "InvalidClientTokenId",
)  # fmt: skip
_ERROR_CODE = re.compile(r"<Code>(\w+)</Code>|\(code: (\w+)\)")


class StorageError(PyramidError):
    """The object store refused a request; the message says what to fix."""


class ObjectStoreUnavailable(StorageError, StorageUnavailable):  # noqa: N818
    """The storage refused the image as a whole: credentials, permission, bucket, network."""


def open_object_store(url: str, storage_options: Mapping[str, Any] | None) -> ObjectStore:
    """The store of the image group at ``url`` (``s3://bucket/plate.zarr/B/03/0``)."""
    return ObjectStore(url, storage_options)


def parse_url(url: str) -> tuple[str, str, str]:
    """(kind, bucket or host, prefix) of an image URL, refusing what names no image group."""
    if _CONTROL.search(url):
        raise PyramidError(f"{url!r} contains a control character; pass the plain URL")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    kind = _KINDS.get(scheme)
    if kind is None:
        raise PyramidError(
            f"{url!r}: the scheme {scheme!r} is not supported; use s3:// (S3 and S3-compatible "
            "servers), gs://, https:// (read only) or a local path"
        )
    if parts.query or parts.fragment:
        raise PyramidError(f"{url!r}: an image URL has no '?' query or '#' fragment; drop it")
    if not parts.netloc:
        raise PyramidError(f"{url!r} names no bucket (or host): use {scheme}://bucket/image.zarr")
    prefix = parts.path.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise PyramidError(
            f"{url!r} has an empty, '.' or '..' component; pass the image group's plain URL"
        )
    return kind, parts.netloc, prefix


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ObjectStore(Store):
    """An image group under a prefix of a bucket (or of an HTTP server).

    Keys are relative to the image, as for a folder. The obstore client is made on first
    use, so a store is cheap to create, to pickle (to dask.distributed workers: the URL and
    the options travel, each process makes its own client) and to ask for its parent.
    """

    # Eight blocks at once (each with its requests in flight) whatever the cores: a request
    # to S3 waits tens of milliseconds for its first byte, during which a core decodes
    # several chunks. On a local server, which is the bottleneck itself, 2 to 16 blocks at
    # once took the same time (benchmarks/README.md).
    concurrent_tasks = 8

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.kind, self.bucket, self.prefix = parse_url(url)
        self.scheme = urlsplit(url).scheme.lower()
        self.url = f"{self.scheme}://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.options = dict(storage_options or {})
        for key in self.options:
            if not isinstance(key, str):
                raise PyramidError(f"storage option names are text, got {key!r}")
        self._client: Any = None
        self._clients: dict[str, Any] = {}
        self._guard = threading.Lock()
        # The write check of a build holding the image (see guarded()); None: no check.
        self._writable: Callable[[], None] | None = None
        self._locks: dict[str, ObjectImageLock] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (ObjectStore, (self.url, self.options))

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectStore) and (other.url, other.options) == (
            self.url,
            self.options,
        )

    def __hash__(self) -> int:
        return hash(self.url)

    # ------------------------------------------------------------------ the client

    @property
    def client(self) -> Any:
        """The obstore store of the image's prefix, made on first use."""
        if self._client is None:
            with self._guard:
                if self._client is None:
                    self._client = self.client_at("")
        return self._client

    def client_at(self, key: str) -> Any:
        """An obstore store rooted at ``key`` of the image (for zarr-python's store)."""
        if key in self._clients:
            return self._clients[key]
        try:
            client = make_client(self.scheme, self.bucket, join(self.prefix, key), self.options)
        except PyramidError as exc:  # a configuration we refuse (a profile without boto3...)
            raise ObjectStoreUnavailable(f"{self.url}: {exc}") from None
        except Exception as exc:  # obstore raises several types for a bad configuration
            raise ObjectStoreUnavailable(
                f"{self.url}: {_first_line(exc).rstrip('.')}; check the storage options"
            ) from None
        self._clients[key] = client
        return client

    def failure(self, exc: BaseException, key: str = "", writing: bool = False) -> StorageError:
        """One sentence for a request the storage refused."""
        return storage_failure(exc, self.url, self.describe(key), self.bucket, self.kind, writing)

    # ------------------------------------------------------------------ keys

    def describe(self, key: str = "") -> str:
        return f"{self.url}/{key}" if key else self.url

    def get(self, key: str, max_bytes: int) -> bytes | None:
        import obstore

        try:
            result = obstore.get(self.client, key)
            size = result.meta["size"]
            if size > max_bytes:
                raise OversizedError(self.describe(key), size, max_bytes)
            data = bytes(result.bytes())
        except FileNotFoundError as exc:
            if "NoSuchBucket" in str(exc):
                raise self.failure(exc, key) from None
            return None
        except (OversizedError, PyramidError):
            raise
        except Exception as exc:
            raise self.failure(exc, key) from None
        if len(data) > max_bytes:
            raise OversizedError(self.describe(key), len(data), max_bytes)
        return data

    def set(self, key: str, data: Any) -> None:
        import obstore

        self._check_writable(key)
        try:
            obstore.put(self.client, key, data)
        except Exception as exc:
            raise self.failure(exc, key, writing=True) from None

    def delete(self, key: str) -> None:
        import obstore

        self._check_writable(key)
        try:
            obstore.delete(self.client, key)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self.failure(exc, key, writing=True) from None

    def delete_under(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (a folder of the image); how many there were.

        Array metadata documents go last, so that a deletion cut short still leaves a
        recognisable array (see :mod:`.objectbuild`).
        """
        import obstore

        self._check_writable(prefix)
        keys = [key for key, _ in self.objects(prefix)]
        last = [k for k in keys if k.rsplit("/", 1)[-1] in ZARR_METADATA_NAMES]
        first = [k for k in keys if k.rsplit("/", 1)[-1] not in ZARR_METADATA_NAMES]
        try:
            for batch in (first, last):
                for start in range(0, len(batch), 1000):  # DeleteObjects takes 1000 keys
                    obstore.delete(self.client, batch[start : start + 1000])
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise self.failure(exc, prefix, writing=True) from None
        return len(keys)

    def exists(self, key: str) -> bool:
        if not key:
            return True
        if self.is_file(key):
            return True
        if self.kind == "http":
            # HTTP cannot list: a folder is known by the zarr documents it holds.
            return any(self.is_file(join(key, name)) for name in ZARR_METADATA_NAMES)
        return self.top_level(key) != ([], [])

    def is_file(self, key: str) -> bool:
        import obstore

        try:
            obstore.head(self.client, key)
        except FileNotFoundError as exc:
            if "NoSuchBucket" in str(exc):
                raise self.failure(exc, key) from None
            return False
        except Exception as exc:
            raise self.failure(exc, key) from None
        return True

    def objects(self, prefix: str) -> Iterator[tuple[str, int]]:
        import obstore

        if self.kind == "http":
            return  # HTTP cannot list
        try:
            for batch in obstore.list(self.client, prefix or None, chunk_size=1000):
                for meta in batch:
                    yield meta["path"], meta["size"]
        except Exception as exc:
            raise self.failure(exc, prefix) from None

    def stamps(self, prefix: str) -> Iterator[tuple[str, int, str]]:
        import obstore

        if self.kind == "http":
            return
        try:
            for batch in obstore.list(self.client, prefix or None, chunk_size=1000):
                for meta in batch:
                    # The ETag changes with every PUT (for a single-part upload it is the
                    # MD5 of the bytes); servers without one give the modification time.
                    stamp = meta.get("e_tag") or f"t{meta.get('last_modified')}"
                    yield meta["path"], meta["size"], f"e{stamp}"
        except Exception as exc:
            raise self.failure(exc, prefix) from None

    def unit_writer(self, update_id: str, protected: str) -> Store:
        from .store import ProtectedStore

        # One PUT replaces an object whole; every write first checks the lease is ours.
        hold = self.held(update_id)
        store = self.guarded(hold.check_fresh) if hold is not None else self
        return cast(Store, ProtectedStore(store, protected))

    def top_level(self, prefix: str = "") -> tuple[list[str], list[str]]:
        """(object names, folder names) directly under ``prefix``, in one request."""
        import obstore

        if self.kind == "http":
            return [], []
        try:
            listing = obstore.list_with_delimiter(self.client, prefix or None)
        except Exception as exc:
            raise self.failure(exc, prefix) from None
        names = [meta["path"].rsplit("/", 1)[-1] for meta in listing["objects"]]
        folders = [path.rsplit("/", 1)[-1] for path in listing["common_prefixes"]]
        return names, folders

    def free_bytes(self) -> int | None:
        return None

    def parent(self) -> Store | None:
        if not self.prefix:
            return None
        parent = "/".join(self.prefix.split("/")[:-1])
        url = f"{self.scheme}://{self.bucket}" + (f"/{parent}" if parent else "")
        return ObjectStore(url, self.options)

    def enclosing(self) -> Store | None:
        # Consolidated metadata of groups above the image (a plate's) is not edited in object
        # storage: a build there keeps only the image's own document true (README).
        return None

    def name(self) -> str:
        return self.prefix.rsplit("/", 1)[-1] if self.prefix else self.bucket

    def child(self, rel: str) -> Store:
        # rel comes from metadata: a plain relative key below this prefix, nothing that
        # escapes it (object stores have no links, so the key itself is all to check).
        parts = rel.strip("/").split("/") if rel else []
        if not parts or any(part in ("", ".", "..") for part in parts) or rel.startswith("/"):
            raise PyramidError(
                f"{self.url}: dataset member {rel!r} is not a plain relative path inside it"
            )
        return ObjectStore(f"{self.url}/{'/'.join(parts)}", self.options)

    def folders(self) -> list[str]:
        _, folders = self.top_level()
        return sorted(name for name in folders if not name.startswith("."))

    def location(self) -> UrlPath:
        return UrlPath(self.url)

    def zarr_store(self, prefix: str, read_only: bool, max_file_bytes: int | None = None) -> Any:
        from .zarrread import CheckedObjectStore

        if not read_only:
            self._check_writable(prefix)
        return CheckedObjectStore(
            self.client_at(prefix),
            read_only=read_only or self.kind not in WRITABLE,
            max_file_bytes=max_file_bytes,
            root=self.describe(prefix),
        )

    # ------------------------------------------------------------------ builds

    def check_write_target(self, key: str, what: str, folder: bool) -> None:
        # No links and no folders in a bucket: a key is written where it says.
        self.check_writable()

    def check_writable(self) -> None:
        if self.kind not in WRITABLE:
            raise PyramidError(
                f"{self.url} is served over HTTP, which is read only: a pyramid cannot be built "
                "there. Build it where the image is stored (s3://, gs:// or a local copy). "
                "Nothing was written."
            )

    def _check_writable(self, key: str) -> None:
        if self.kind not in WRITABLE:
            raise PyramidError(f"{self.describe(key)}: HTTP is read only; nothing was written")
        if self._writable is not None:
            self._writable()

    def guarded(self, check: Callable[[], None]) -> ObjectStore:
        """This store for one build's writes: ``check`` runs before every write or delete."""
        store = ObjectStore(self.url, self.options)
        store._client, store._clients = self.client, self._clients
        store._writable = check
        return store

    def lock(self, build_id: str) -> AbstractContextManager[ImageHold]:
        self.check_write_target("", "image", folder=True)
        lock = ObjectImageLock(self, build_id)
        self._locks[build_id] = lock
        return lock

    def held(self, build_id: str) -> ObjectImageLock | None:
        return self._locks.get(build_id)

    def recover(self) -> list[str]:
        from .objectbuild import recover

        return recover(self)

    def has_leftovers(self) -> bool:
        from .objectbuild import LOCK_KEY, is_journal

        if self.kind not in WRITABLE:
            return False
        names, _ = self.top_level()
        return any(name == LOCK_KEY or is_journal(name) for name in names)

    def leftovers(self) -> list[str]:
        from .objectbuild import is_journal

        if self.kind not in WRITABLE:
            return []
        names, _ = self.top_level()
        return sorted(name for name in names if is_journal(name))

    def begin_build(self, build_id: str, changes: ImageChanges) -> BuildTransaction:
        from .objectbuild import ObjectBuild

        # A zarr v3 image's own consolidated metadata is inside the metadata written last
        # (changes.final); a zarr v2 image's .zmetadata would be a second document to keep
        # in step through every step and recovery, which object builds do not do: refused.
        for edit in changes.consolidated:
            if edit.up == 0:
                raise PyramidError(
                    f"{self.describe(edit.file)}: consolidated metadata of a zarr v2 image is "
                    "not kept true by builds in object storage; build a local copy, or remove "
                    "it and run zarr.consolidate_metadata again after the build. Nothing was "
                    "written."
                )
        return ObjectBuild(self, build_id, changes)

    def write_error(self, exc: OSError) -> PyramidError:
        return self.failure(exc, writing=True)


class ObjectImageLock:
    """One build per image at a time: a lease object created with a conditional write."""

    def __init__(self, store: ObjectStore, build_id: str) -> None:
        from . import lease
        from .objectbuild import LOCK_KEY, ObjectLease

        self.store = store
        self.build_id = build_id
        where = store.url.replace("{", "{{").replace("}", "}}")
        busy = (
            f"{where} is being built by another process ({{holder}}); wait for that build "
            "to finish or cancel it, then run again. Nothing was written."
        )
        self.lease = lease.LeaseLock(
            ObjectLease(store, LOCK_KEY), build_id, busy, seconds=lease.LEASE_SECONDS
        )

    def __enter__(self) -> ObjectImageLock:
        try:
            self.lease.acquire()
        except OSError as exc:
            raise self.store.failure(exc.__cause__ or exc, writing=True) from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.store._locks.pop(self.build_id, None)
        self.lease.release()

    def holds(self) -> bool:
        try:
            return self.lease.holds()
        except OSError:
            return False

    def check_fresh(self) -> None:
        """Refuse a write once the lease may have expired (this process was stopped)."""
        if not self.lease.fresh():
            from ..errors import ImageBusyError

            raise ImageBusyError(
                f"{self.store.url}: this build's lease on the image was not renewed in time (the "
                "process was stopped or the storage unreachable), so another build may have "
                "taken over; it stopped writing. Run again."
            )


def make_client(scheme: str, bucket: str, prefix: str, options: Mapping[str, Any]) -> Any:
    """The obstore store for ``bucket``/``prefix`` (or an HTTP server's ``host``/``prefix``),
    configured from the environment and ``options``."""
    from obstore.store import GCSStore, HTTPStore, S3Store

    kind = _KINDS[scheme]
    config = {k: v for k, v in options.items() if k not in _CLIENT_KEYS and k != "profile"}
    client = {**_CLIENT_DEFAULTS, **{k: v for k, v in options.items() if k in _CLIENT_KEYS}}
    if kind == "http":
        if config:
            raise PyramidError(
                f"storage options {sorted(config)} do not apply to HTTP; it takes only the "
                f"client's ({', '.join(sorted(_CLIENT_KEYS))})"
            )
        if scheme == "http":
            client.setdefault("allow_http", True)  # the user named a plain-HTTP server
        url = f"{scheme}://{bucket}/{prefix}" if prefix else f"{scheme}://{bucket}"
        return HTTPStore.from_url(url, client_options=client, retry_config=_RETRY)
    if kind == "gs":
        return GCSStore(
            bucket, prefix=prefix or None, config=config, client_options=client,
            retry_config=_RETRY,
        )  # fmt: skip
    endpoint = (
        config.get("endpoint")
        or config.get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or os.environ.get("AWS_ENDPOINT")
    )
    if endpoint and "endpoint" not in config and "endpoint_url" not in config:
        config["endpoint"] = endpoint
    if endpoint and str(endpoint).lower().startswith("http://"):
        client.setdefault("allow_http", True)  # the user named a plain-HTTP server
    provider = _profile_credentials(config, options.get("profile"))
    return S3Store(
        bucket, prefix=prefix or None, config=config, client_options=client,
        retry_config=_RETRY, credential_provider=provider,
    )  # fmt: skip


def _profile_credentials(config: dict[str, Any], profile: Any) -> Any:
    """Credentials of an AWS profile (``AWS_PROFILE`` or the ``profile`` option), via boto3.

    Used only when no keys are given otherwise, as AWS tools do; the profile's region
    applies unless one is set.
    """
    profile = profile or os.environ.get("AWS_PROFILE")
    keys_given = "access_key_id" in config or "aws_access_key_id" in config
    if not profile or keys_given or os.environ.get("AWS_ACCESS_KEY_ID"):
        return None
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        raise PyramidError(
            f"the AWS profile {profile!r} is read with boto3, which is not installed: "
            "pip install boto3, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ) from None
    try:
        session = boto3.Session(profile_name=str(profile))
    except Exception as exc:  # botocore's ProfileNotFound and friends
        raise PyramidError(f"AWS profile {profile!r}: {_first_line(exc)}") from None
    if session.region_name and not (
        {"region", "aws_region"} & set(config)
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
    ):
        config["region"] = session.region_name
    return Boto3CredentialProvider(session)


def storage_failure(
    exc: BaseException, image: str, where: str, bucket: str, kind: str, writing: bool
) -> StorageError:
    """One sentence for a request the storage refused, by what the user can do about it.

    Refusals of the image as a whole (credentials, permission, bucket, network) name the
    image; others name the key (``where``).
    """
    text = str(exc)
    match = _ERROR_CODE.search(text)
    code = next((g for g in match.groups() if g), "") if match else ""
    name = type(exc).__name__
    if code in _CREDENTIAL_CODES or name == "UnauthenticatedError":
        if kind == "s3":
            fix = (
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or the "
                "storage options access_key_id / secret_access_key)"
            )
        else:
            fix = "check the credentials"
        what = f"the storage refused the credentials ({code or name}); {fix}"
    elif code == "NoSuchBucket":
        what = f"the bucket {bucket!r} does not exist; check the URL" + (
            " and AWS_ENDPOINT_URL" if kind == "s3" else ""
        )
    elif code in ("AccessDenied", "AllAccessDisabled") or name == "PermissionDeniedError":
        action = "write" if writing else "read"
        what = (
            f"no permission to {action} there ({code or 'access denied'}); use credentials "
            f"allowed to {action} this bucket"
            + (" (s3:PutObject and s3:DeleteObject)" if writing and kind == "s3" else "")
            + (", or build a local copy" if writing else "")
        )
    elif name == "UnknownConfigurationKeyError":
        what = f"{_first_line(exc).rstrip('.')}; check the storage options"
    elif _unreachable(text):
        server = re.search(r"\b(https?://[^/\s]+)", text)
        causes = (r'message: "([^"]+)"', r'"(dns error)"', r"(timed out)", r'"([^"]+ error)"')
        found = [m.group(1) for m in (re.search(c, text) for c in causes) if m]
        reason = found[0] if found else "no reply"
        what = (
            f"the storage{' at ' + server.group(1) if server else ''} cannot be reached "
            f"({reason.lower()}); check the URL, AWS_ENDPOINT_URL and the network"
        )
    else:
        action = "a write" if writing else "a read"
        what = f"the storage refused {action} ({code or name}: {_first_line(exc)[:160]})"
        tail = " No new level was published." if writing else ""
        return StorageError(f"{where}: {what}.{tail}")
    tail = " No new level was published." if writing else ""
    return ObjectStoreUnavailable(f"{image}: {what}.{tail}")


def _unreachable(text: str) -> bool:
    lowered = text.lower()
    return any(
        word in lowered
        for word in ("error sending request", "connection refused", "dns error", "timed out")
    )


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
