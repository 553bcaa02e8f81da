"""pytest fixtures for the S3 tier: a real S3 server process, fresh buckets, and both storage backends.

- ``s3_server`` (session): an ``S3Endpoint`` (``endpoint_url``, ``access_key``, ``secret_key``,
  ``region``, ``client()``, ``make_bucket(name)``, ``remove_bucket(name)``, ``env()``,
  ``storage_settings()``, ``credentials``). A versitygw process on 127.0.0.1 started for the
  session, or the external endpoint named by ``WEBRELEASE_TEST_S3_ENDPOINT`` (with
  ``WEBRELEASE_TEST_S3_ACCESS_KEY`` / ``WEBRELEASE_TEST_S3_SECRET_KEY`` /
  ``WEBRELEASE_TEST_S3_REGION``).
- ``s3_bucket`` (function): the name of a fresh, empty bucket, removed after the test.
- ``storage_backend`` (function, parametrised ``file`` / ``s3``): a ``StorageBackend`` with a
  store that records every request it sends, and fresh locations; use it to run one test on
  both backends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from tests.harness.s3server import S3Endpoint, S3Server
from webrelease.copier.spec import Storage
from webrelease.copier.storage import Credentials, Location, RequestEvent, Store, open_store, parse_url


class ExternalS3(BaseModel):
    """An S3 endpoint to test against instead of starting versitygw (read once from the environment)."""

    model_config = ConfigDict(frozen=True)
    endpoint: str | None = None
    access_key: str = ""
    secret_key: str = ""
    region: str = "us-east-1"

    @classmethod
    def from_env(cls) -> ExternalS3:
        prefix = "WEBRELEASE_TEST_S3_"
        values = {k[len(prefix) :].lower(): v for k, v in os.environ.items() if k.startswith(prefix) and v}
        return cls.model_validate(values)


def unique_bucket_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


_S3_FIXTURES = ("s3_server", "s3_bucket", "storage_backend")
_server: S3Server | None = None


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Endpoint]:
    global _server
    external = ExternalS3.from_env()
    if external.endpoint:
        yield S3Endpoint(external.endpoint, external.access_key, external.secret_key, external.region)
        return
    server = S3Server()
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    _server = server
    try:
        yield server.endpoint
    finally:
        _server = None
        if not server.running:
            print(f"--- versitygw exited during the session; its log ---\n{server.log_text()}")
        server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that used the S3 server gets the server's recent log in its report."""
    report: pytest.TestReport = yield
    fixtures = getattr(item, "fixturenames", ())
    if report.failed and _server is not None and any(f in fixtures for f in _S3_FIXTURES):
        report.sections.append(("versitygw log (last 4000 chars)", _server.log_text(4000)))
    return report


@pytest.fixture
def s3_bucket(s3_server: S3Endpoint) -> Iterator[str]:
    name = s3_server.make_bucket(unique_bucket_name())
    yield name
    s3_server.remove_bucket(name)


@dataclass
class StorageBackend:
    """One backend, ready for a test: a store recording its requests, and fresh locations."""

    scheme: str
    settings: Storage
    credentials: Credentials | None
    root: Location
    #: The bucket of every location (empty for ``file``); ``RequestEvent.bucket`` carries it.
    bucket: str
    #: Environment a subprocess needs to reach the same storage (S3 credentials and endpoint).
    env: dict[str, str] = field(default_factory=dict)
    #: Every request the store sent, in order (appended from the sending threads).
    events: list[RequestEvent] = field(default_factory=list)
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.store = self.open_store(on_request=self.events.append)

    def open_store(self, **kwargs: Any) -> Store:
        """Another store on the same storage (e.g. with a different ``multipart_threshold``)."""
        kwargs.setdefault("max_in_flight", 32)
        return open_store(self.scheme, self.settings, credentials=self.credentials, **kwargs)

    def location(self, name: str) -> Location:
        """A location named ``name`` (``a/b`` nests) inside this test's own space."""
        return self.root.child(name)

    def url(self, name: str) -> str:
        return self.location(name).url


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.storage)])
def storage_backend(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    if request.param == "file":
        root = tmp_path / "storage"
        root.mkdir()
        return StorageBackend("file", Storage(), None, parse_url(root.as_uri()), "")
    endpoint: S3Endpoint = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    return StorageBackend(
        "s3",
        endpoint.storage_settings(),
        endpoint.credentials,
        parse_url(f"s3://{bucket}/"),
        bucket,
        env=endpoint.env(),
    )
