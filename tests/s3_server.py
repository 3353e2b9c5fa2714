"""An S3-compatible server on a free port (moto's), and the AWS_* environment that points at it.

The storage root `s3://…` goes through fsspec and s3fs exactly as against a real bucket: the
endpoint and the credentials come from the standard AWS variables.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from moto.server import ThreadedMotoServer

from servicectl.process import free_port


@contextmanager
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Start the server, set AWS_* for this test, create a bucket; yields `s3://bucket`."""
    # The server logs every request through werkzeug: keep the test output to failures.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for name, value in {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(name, value)
        import s3fs

        # fsspec keeps one S3FileSystem per set of options: one made against an earlier test's
        # server would keep its endpoint.
        s3fs.S3FileSystem.clear_instance_cache()
        bucket = f"fraud-{uuid.uuid4().hex[:10]}"
        s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
        yield f"s3://{bucket}"
    finally:
        server.stop()
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
