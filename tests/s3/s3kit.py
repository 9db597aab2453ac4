"""A real S3 server on 127.0.0.1 for the tests, and how they look into it.

The server is moto's server mode (``moto[server]``) in its own process, on a free port of the
loopback interface: nothing leaves the machine. It enforces credentials and IAM policies
once it is set up, so the tests can meet a wrong key, a user without write permission and a
missing bucket as a user would. Everything the tests check is read back with boto3 (and
zarr on a downloaded copy), never through the package's own store.

Build children (killed mid-build, or paused holding the image) come from
``faultkit``'s forkserver; the only instrument is :func:`count_writes`, which wraps
obstore's ``put`` and ``delete`` so that a child can SIGKILL itself (or pause) right before
its N-th write, as ``faultkit.Steps`` does with filesystem calls.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imaging import CHANGE_RECORD

REGION = "us-east-1"
_NAMES = itertools.count()


@dataclass
class Keys:
    """An access key pair of one IAM user of the server."""

    access_key_id: str
    secret_access_key: str


@dataclass
class S3Server:
    """moto's server on 127.0.0.1: its endpoint and the users the tests act as."""

    process: subprocess.Popen
    endpoint: str
    admin: Keys  # may do anything
    reader: Keys  # may list and read, never write

    def env(self, keys: Keys | None = None) -> dict[str, str]:
        """The AWS environment variables of a user of this server (admin by default)."""
        keys = keys or self.admin
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": keys.access_key_id,
            "AWS_SECRET_ACCESS_KEY": keys.secret_access_key,
            "AWS_REGION": REGION,
        }

    def client(self, keys: Keys | None = None) -> Any:
        import boto3

        keys = keys or self.admin
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            region_name=REGION,
        )

    def new_bucket(self) -> str:
        name = f"test-{os.getpid()}-{next(_NAMES)}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server() -> S3Server:
    """Start moto on a free loopback port, create its users, then turn authentication on."""
    for _ in range(3):
        port = _free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            process.kill()
            continue  # the port was taken meanwhile: another one
        return _set_up(process, endpoint)
    raise RuntimeError("moto's server did not start")


def _set_up(process: subprocess.Popen, endpoint: str) -> S3Server:
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
        region_name=REGION,
    )

    def user(name: str, actions: list[str]) -> Keys:
        iam.create_user(UserName=name)
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
        }
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Keys(key["AccessKeyId"], key["SecretAccessKey"])

    admin = user("admin", ["s3:*"])
    reader = user("reader", ["s3:GetObject", "s3:ListBucket"])
    # From here on every request must be signed by a known key and allowed by its policy.
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(request, timeout=10).close()
    return S3Server(process, endpoint, admin, reader)


# --------------------------------------------------------------------------- looking in


def upload(client: Any, folder: Path, bucket: str, prefix: str) -> None:
    """Every file under ``folder`` to ``bucket`` under ``prefix``."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.put_object(
                Bucket=bucket,
                Key=f"{prefix}/{path.relative_to(folder).as_posix()}",
                Body=path.read_bytes(),
            )


def objects(client: Any, bucket: str, prefix: str = "") -> dict[str, str]:
    """sha256 of every object of ``bucket`` under ``prefix``, by key relative to it; the
    change record (inside level 1) left out, as ``tree_snapshot`` leaves it: a cache."""
    found = {}
    start = f"{prefix}/" if prefix else ""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start):
        for entry in page.get("Contents", []):
            if entry["Key"].endswith(f"/{CHANGE_RECORD}"):
                continue
            body = client.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
            found[entry["Key"][len(start) :]] = hashlib.sha256(body).hexdigest()
    return found


def download(client: Any, bucket: str, prefix: str, folder: Path) -> Path:
    """A local copy of every object under ``prefix`` (to read with zarr as a folder)."""
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}/"
    ):
        for entry in page.get("Contents", []):
            target = folder / entry["Key"][len(prefix) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            body = client.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
            target.write_bytes(body)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def read_object(client: Any, bucket: str, key: str) -> bytes | None:
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None


def files_of(snapshot: dict[str, str]) -> dict[str, str]:
    """A local ``tree_snapshot`` as object keys: files only (an object store has no folders)."""
    return {name: digest for name, digest in snapshot.items() if digest != "dir"}


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``napari-pyramids ...`` in a fresh process with exactly these AWS variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "napari_pyramids.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


# --------------------------------------------------------------------------- children


def count_writes(kill_at: int | None, pause_at: int | None, conn: Any) -> list[int]:
    """Wrap obstore's put and delete: SIGKILL before write ``kill_at``, pause before
    ``pause_at`` (say so, wait for a word); returns the live count (one-item list).

    Lease renewals (a put replacing the lease ``If-Match``) are not counted: they happen on
    a timer, so counting them would make the N-th write differ from run to run.
    """
    import obstore

    count = [0]

    def wrap(function: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if isinstance(kwargs.get("mode"), dict):
                return function(*args, **kwargs)
            count[0] += 1
            if count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if count[0] == pause_at:
                conn.send(("paused", count[0]))
                conn.recv()
            return function(*args, **kwargs)

        return counted

    obstore.put = wrap(obstore.put)
    obstore.delete = wrap(obstore.delete)
    return count


def child_s3_build(
    url: str,
    params: dict[str, Any],
    env: dict[str, str],
    kill_at: int | None,
    pause_at: int | None,
    conn: Any,
) -> None:
    """Run ``iter_build`` on ``url`` with ``env`` as its AWS environment, reporting steps."""
    os.environ.update(env)
    from napari_pyramids import engine
    from napari_pyramids.errors import PyramidError
    from napari_pyramids.storage import lease

    if "NAPARI_PYRAMIDS_TEST_LEASE_SECONDS" in env:
        lease.LEASE_SECONDS = float(env["NAPARI_PYRAMIDS_TEST_LEASE_SECONDS"])

    count = count_writes(kill_at, pause_at, conn)
    conn.send(("start", time.monotonic()))
    try:
        for progress in engine.iter_build(url, **params):
            conn.send((progress.phase, time.monotonic(), progress.done))
    except PyramidError as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
        return
    conn.send(("end", time.monotonic(), count[0]))


def keys_outside(all_objects: dict[str, str], prefix: str) -> dict[str, str]:
    return {k: v for k, v in all_objects.items() if not k.startswith(prefix + "/")}


def iter_levels(document: dict[str, Any]) -> Iterator[str]:
    ome = document["attributes"]["ome"] if "attributes" in document else document
    for dataset in ome["multiscales"][0]["datasets"]:
        yield dataset["path"]
