"""An S3-compatible server for the object-store tests: moto's, on 127.0.0.1, one per session.

This is ``moto.server.ThreadedMotoServer`` with one addition: moto checks
``If-Match``/``If-None-Match`` and then stores without a lock, so two conditional PUTs
racing on one key could both pass, which real S3 never allows. The server below runs
conditional PUTs one at a time (everything else concurrently), making moto's
check-and-store atomic as S3's is.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

BUCKET = "omniq-test"


@pytest.fixture(scope="session")
def s3_storage_options() -> Iterator[dict[str, Any]]:
    """fsspec options reaching a fresh moto server with bucket :data:`BUCKET` created."""
    moto_server = pytest.importorskip(
        "moto.moto_server.werkzeug_app", reason="moto[server] runs the S3 tests"
    )
    s3fs = pytest.importorskip("s3fs", reason="s3fs runs the S3 tests (omniq[s3])")
    from werkzeug.serving import make_server

    app = moto_server.DomainDispatcherApplication(moto_server.create_backend_app)
    conditional = threading.Lock()

    def serialize_conditional_puts(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["REQUEST_METHOD"] == "PUT" and (
            "HTTP_IF_MATCH" in environ or "HTTP_IF_NONE_MATCH" in environ
        ):
            with conditional:
                return list(app(environ, start_response))
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, serialize_conditional_puts, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "us-east-1"},
    }
    s3fs.S3FileSystem(**options).call_s3("create_bucket", Bucket=BUCKET)
    try:
        yield options
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture
def s3_ref(s3_storage_options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A ref for an empty prefix of the test bucket (plain data, as the suite requires),
    removed afterwards (moto lists a bucket by scanning all of it, so leftovers slow
    every later test)."""
    import s3fs

    prefix = f"{BUCKET}/{uuid.uuid4().hex}"
    yield {"url": f"s3://{prefix}", "storage_options": s3_storage_options}
    fs = s3fs.S3FileSystem(**s3_storage_options)
    if fs.exists(prefix):
        fs.rm(prefix, recursive=True)
