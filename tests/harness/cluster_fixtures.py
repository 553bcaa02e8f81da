"""pytest fixtures for the cluster tier: a real control plane, the test node agent, a namespace per test.

- ``control_plane`` (session): a `ControlPlane` - kubeconfig path, ``api_client()`` factory,
  ``kubectl(...)``, ``bin_dir`` (kubectl and the control plane binaries), ``log_dir``, ``version``.
  Starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1 (building the
  binaries first on a fresh machine, via scripts/build-k8s.sh). With ``WEBRELEASE_TEST_KUBECONFIG`` set,
  it uses that cluster instead and starts nothing (``external`` is True).
- ``node_agent`` (session): the running `NodeAgent` (the test stand-in for the kubelet), whose pod
  processes find the venv's ``python`` and ``webrelease`` and the built ``kubectl`` on PATH; None
  against an external cluster, whose own nodes run the pods.
- ``kube`` (session): a `Kube` (plain-JSON API access: paths in, dicts out) for the admin identity;
  ``k8s_api`` (session): an admin `kubernetes.client.ApiClient`, for the generated typed client.
- ``namespace`` (function): a fresh namespace (with its ``default`` ServiceAccount), deleted after the
  test; it brings up the node agent too, so pods created in it run.

Every test that uses ``control_plane`` is marked ``cluster``. When such a test fails, the tail of each
component's log is added to its report. The session's start times are printed in the terminal summary.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from kubernetes import client as k8s_client

from tests.harness.controlplane import (
    ClusterSettings,
    ControlPlane,
    Kube,
    LocalControlPlane,
    api_path,
    ensure_binaries,
    external_control_plane,
    terminate_on_sigterm,
)
from tests.harness.nodeagent import NodeAgent, NodeAgentConfig

T = TypeVar("T")

_TIMINGS = pytest.StashKey[dict[str, float]]()


def wait_until(
    what: str, probe: Callable[[], T | None], timeout_s: float = 60.0, interval_s: float = 0.2
) -> T:
    """Polls ``probe`` until it returns something truthy (returned) or fails with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")
        time.sleep(interval_s)


def _timings(config: pytest.Config) -> dict[str, float]:
    return config.stash.setdefault(_TIMINGS, {})


_SETTINGS = pytest.StashKey[ClusterSettings]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SETTINGS] = ClusterSettings.from_env()


def pytest_collection_finish(session: pytest.Session) -> None:
    """On a fresh machine, builds the binaries before the first test, outside any per-test timeout."""
    settings = session.config.stash[_SETTINGS]
    if session.config.option.collectonly or settings.external_kubeconfig is not None:
        return
    if not any(item.get_closest_marker("cluster") for item in session.items):
        return
    capture = session.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        ensure_binaries(settings, show_progress=True)


@pytest.fixture(scope="session")
def cluster_settings(request: pytest.FixtureRequest) -> ClusterSettings:
    return request.config.stash[_SETTINGS]


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    cluster_settings: ClusterSettings,
) -> Iterator[ControlPlane]:
    if cluster_settings.external_kubeconfig is not None:
        yield external_control_plane(cluster_settings)
        return
    binaries = ensure_binaries(cluster_settings)
    local = LocalControlPlane(
        binaries, tmp_path_factory.mktemp("controlplane"), start_timeout_s=cluster_settings.start_timeout_s
    )
    with terminate_on_sigterm():
        plane = local.start()
        _timings(request.config)["control plane"] = plane.start_seconds or 0.0
        try:
            yield plane
        finally:
            local.stop()


@pytest.fixture(scope="session")
def k8s_api(control_plane: ControlPlane) -> Iterator[k8s_client.ApiClient]:
    with control_plane.api_client() as api:
        yield api


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Iterator[Kube]:
    with control_plane.kube() as client:
        yield client


@pytest.fixture(scope="session")
def node_agent(
    request: pytest.FixtureRequest, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeAgent | None]:
    if control_plane.external:
        yield None
        return
    path_parts = [str(Path(sys.executable).parent)]
    if control_plane.bin_dir is not None:
        path_parts.append(str(control_plane.bin_dir))
    path_parts.append(os.environ.get("PATH", ""))
    agent = NodeAgent(
        NodeAgentConfig(
            kubeconfig=control_plane.kubeconfig,
            work_dir=tmp_path_factory.mktemp("nodeagent"),
            path=os.pathsep.join(path_parts),
        )
    )
    started = time.monotonic()
    try:
        agent.start()
        _timings(request.config)["node agent"] = time.monotonic() - started
        yield agent
    finally:
        agent.stop()


def _namespace_name(node_name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", node_name.lower()).strip("-")[:40].strip("-") or "t"
    return f"{base}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube: Kube, node_agent: NodeAgent | None) -> Iterator[str]:
    name = _namespace_name(request.node.name)
    kube.create(
        api_path("v1", "namespaces"), {"metadata": {"name": name, "labels": {"webrelease.dev/test": "true"}}}
    )
    wait_until(
        f"the default ServiceAccount in {name}",
        lambda: kube.find(api_path("v1", "serviceaccounts", namespace=name, name="default")),
        timeout_s=60,
    )
    try:
        yield name
    finally:
        kube.delete(api_path("v1", "namespaces", name=name), {"propagationPolicy": "Background"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "control_plane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if not report.failed:
        return report
    funcargs = getattr(item, "funcargs", {})
    plane = funcargs.get("control_plane")
    if isinstance(plane, ControlPlane) and not plane.external:
        report.sections.append(("control plane logs", plane.tail_logs(30)))
    agent = funcargs.get("node_agent")
    if isinstance(agent, NodeAgent):
        report.sections.append(
            ("node agent", f"pod directories (logs, rootfs): {agent.config.work_dir / 'pods'}")
        )
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    timings = config.stash.get(_TIMINGS, {})
    if timings:
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
        terminalreporter.write_line(f"cluster tier start-up: {parts} (total {sum(timings.values()):.1f} s)")
