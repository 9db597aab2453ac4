"""Fixtures of the object-store tests: one S3 server on 127.0.0.1 for the session."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from imaging import write_image
from s3kit import S3Server, start_server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process configured only through the AWS variables, as the admin user."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    env = s3_server.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A new, empty bucket for one test."""
    return s3_server.new_bucket()


@pytest.fixture
def http_image(tmp_path, rng):
    """An image served read-only over HTTP on 127.0.0.1."""
    data = rng.integers(0, 255, size=(2, 48, 48), dtype=np.uint8)
    write_image(tmp_path / "site" / "img.zarr", data, zarr_format=3, chunks=(1, 16, 16))
    handler = functools.partial(
        _QuietHandler, directory=str(tmp_path / "site")
    )  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield data, f"http://127.0.0.1:{server.server_address[1]}/img.zarr"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
