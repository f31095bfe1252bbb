"""An S3-compatible server for the object-store tests: moto's, on 127.0.0.1, one per session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

BUCKET = "omniq-test"


@pytest.fixture(scope="session")
def s3_storage_options() -> Iterator[dict[str, Any]]:
    """fsspec options reaching a fresh moto server with bucket :data:`BUCKET` created."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] runs the S3 tests")
    s3fs = pytest.importorskip("s3fs", reason="s3fs runs the S3 tests (omniq[s3])")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "us-east-1"},
        "skip_instance_cache": True,
    }
    s3fs.S3FileSystem(**options).call_s3("create_bucket", Bucket=BUCKET)
    try:
        yield options
    finally:
        server.stop()


@pytest.fixture
def s3_ref(s3_storage_options: dict[str, Any]) -> dict[str, Any]:
    """A ref for an empty prefix of the test bucket (plain data, as the suite requires)."""
    return {"url": f"s3://{BUCKET}/{uuid.uuid4().hex}", "storage_options": s3_storage_options}
