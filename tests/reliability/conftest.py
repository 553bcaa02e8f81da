"""Fixtures of the reliability tier: releases in fresh buckets, and the numbers every scenario reports.

Each scenario fills a :class:`~tests.reliability.kit.Tally` (runs, customers, faults injected,
customers lost or wrong); the numbers are printed at the end of the session (``RELIABILITY ...``
lines).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.controlplane import ControlPlane, Kube
from tests.harness.nodeagent import NodeAgent
from tests.harness.operator_harness import OperatorProcess, running_operator
from tests.harness.s3server import S3Endpoint
from tests.reliability.kit import BigRelease, RestartableS3, Tally

_TALLIES = pytest.StashKey[list[Tally]]()

ReleaseFactory = Callable[..., BigRelease]


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Tally:
    t = Tally(request.node.name)
    request.config.stash.setdefault(_TALLIES, []).append(t)
    return t


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane,
    kube: Kube,
    node_agent: NodeAgent | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """``webrelease operator`` as a process of its own (the operator tests' harness), one per module."""
    with running_operator(control_plane, kube, tmp_path_factory.mktemp("operator")) as process:
        yield process


@pytest.fixture
def restartable_s3(tmp_path: Path) -> Iterator[RestartableS3]:
    """A versitygw of the test's own that it may kill and start again (same port, folder, keys)."""
    s3 = RestartableS3(tmp_path / "s3")
    try:
        yield s3
    finally:
        s3.close()


@pytest.fixture
def make_release(tmp_path: Path) -> Iterator[ReleaseFactory]:
    """``make_release(endpoint, customers, **fields)``: a :class:`BigRelease` set up in fresh buckets
    of ``endpoint``, removed after the test."""
    made: list[BigRelease] = []

    def factory(endpoint: S3Endpoint, customers: list[dict[str, Any]], **fields: Any) -> BigRelease:
        rel = BigRelease(endpoint, tmp_path / f"release-{len(made)}", customers, **fields)
        made.append(rel)
        return rel.setup()

    yield factory
    for rel in made:
        rel.teardown()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    tallies = config.stash.get(_TALLIES, [])
    if not tallies:
        return
    for t in tallies:
        terminalreporter.write_line(t.line())
