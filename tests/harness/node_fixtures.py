"""pytest fixtures for the node tier: a control plane of its own, a real node (containerd + kubelet)
running our image, and an S3 server the pods reach.

- Before the first ``node`` test (outside any per-test timeout) the session takes the machine's node
  lock (`NodeLock`: one node-tier run at a time), builds the kubelet if needed (scripts/build-k8s.sh),
  installs the Debian packages and builds/loads the images (scripts/install-node.sh,
  scripts/build-node-images.sh: cached, rebuilt when the Dockerfile or the sources change).
- ``node_stack`` (session): a `NodeStack`; ``node_stack.get()`` starts (once) and returns a
  `RunningNode`: ``plane`` (a `ControlPlane`, whose apiserver reaches the kubelet by its InternalIP),
  ``node`` (the `LocalNode`), ``s3`` (a versitygw listening on the pod network's gateway, reached by
  the test and by pods at the same URL), ``images``. ``node_stack.shutdown()`` stops it all (the
  teardown test does, to check a whole cycle; the next ``get()`` starts a new one).
- ``node_namespace`` (function): a fresh namespace on that cluster, deleted after the test.

Every test that uses ``node_stack`` is marked ``node``. A failing test's report gets the tails of the
kubelet's and containerd's logs.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.controlplane import (
    ClusterSettings,
    ControlPlane,
    Kube,
    LocalControlPlane,
    api_path,
    ensure_binaries,
    terminate_on_sigterm,
)
from tests.harness.node import LocalNode, NodeImages, NodeLock, build_images
from tests.harness.s3server import S3Endpoint, S3Server

_IMAGES = pytest.StashKey[NodeImages]()
_LOCK = pytest.StashKey[NodeLock]()
_TIMINGS = pytest.StashKey[dict[str, float]]()


@dataclass
class RunningNode:
    plane: ControlPlane
    node: LocalNode
    s3: S3Endpoint
    images: NodeImages

    def kube(self) -> Kube:
        return self.plane.kube()


class NodeStack:
    """The node tier's cluster, started on first use; see the module docstring."""

    def __init__(self, settings: ClusterSettings, images: NodeImages, base_dir: Path) -> None:
        self.settings = settings
        self.images = images
        self.base_dir = base_dir
        self.running: RunningNode | None = None
        self._plane: LocalControlPlane | None = None
        self._s3: S3Server | None = None
        self._node: LocalNode | None = None
        self.timings: dict[str, float] = {}

    def get(self) -> RunningNode:
        if self.running is not None:
            return self.running
        binaries = ensure_binaries(self.settings)
        work = self.base_dir / f"stack-{uuid.uuid4().hex[:6]}"
        try:
            started = time.monotonic()
            self._plane = LocalControlPlane(
                binaries,
                work / "controlplane",
                start_timeout_s=self.settings.start_timeout_s,
                apiserver_args=("--kubelet-preferred-address-types=InternalIP",),
            )
            plane = self._plane.start()
            self.timings["node-tier control plane"] = time.monotonic() - started
            started = time.monotonic()
            self._node = LocalNode(
                kubeconfig=plane.kubeconfig,
                apiserver_port=self._plane.apiserver_port,
                kubelet=binaries.k8s("kubelet"),
                images=self.images,
                work_dir=work / "node",
            )
            self._node.start()
            self.timings["node Ready"] = time.monotonic() - started
            self._s3 = S3Server(root=work / "s3", host=self._node.network.gateway)
            endpoint = self._s3.start()
        except BaseException:
            self.shutdown()
            raise
        self.running = RunningNode(plane, self._node, endpoint, self.images)
        return self.running

    def shutdown(self) -> None:
        """Stops the S3 server, the node (undoing its changes to the machine) and the control plane."""
        self.running = None
        try:
            if self._s3 is not None:
                self._s3.stop()
            if self._node is not None:
                started = time.monotonic()
                self._node.stop()
                self.timings["node teardown"] = time.monotonic() - started
        finally:
            self._s3 = self._node = None
            if self._plane is not None:
                self._plane.stop()
                self._plane = None


def _wants_node(item: pytest.Item) -> bool:
    return "node_stack" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _wants_node(item):
            item.add_marker(pytest.mark.node)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Builds what the node tier runs before its first test: kubelet, packages, images (cached)."""
    config = session.config
    if config.option.collectonly or not any(_wants_node(item) for item in session.items):
        return
    settings = ClusterSettings.from_env()
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        lock = NodeLock(settings.cache_dir)
        lock.acquire()
        config.stash[_LOCK] = lock
        started = time.monotonic()
        ensure_binaries(settings, show_progress=True)
        config.stash[_IMAGES] = build_images(settings.cache_dir, lock_held=True, show_progress=True)
        config.stash.setdefault(_TIMINGS, {})["node images (build or cache check)"] = (
            time.monotonic() - started
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    lock = config.stash.get(_LOCK, None)
    if lock is not None:
        lock.release()


@pytest.fixture(scope="session")
def node_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeStack]:
    images = request.config.stash.get(_IMAGES, None)
    if images is None:  # e.g. collected lazily: build now (the lock first)
        pytest_collection_finish(request.session)
        images = request.config.stash[_IMAGES]
    stack = NodeStack(ClusterSettings.from_env(), images, tmp_path_factory.mktemp("node"))
    with terminate_on_sigterm():
        try:
            yield stack
        finally:
            stack.shutdown()
            request.config.stash.setdefault(_TIMINGS, {}).update(stack.timings)


def _namespace_name(node_name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", node_name.lower()).strip("-")[:40].strip("-") or "t"
    return f"{base}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def node_namespace(request: pytest.FixtureRequest, node_stack: NodeStack) -> Iterator[str]:
    running = node_stack.get()
    name = _namespace_name(request.node.name)
    with running.kube() as kube:
        kube.create(
            api_path("v1", "namespaces"),
            {"metadata": {"name": name, "labels": {"webrelease.dev/test": "true"}}},
        )
        deadline = time.monotonic() + 60
        while kube.find(api_path("v1", "serviceaccounts", namespace=name, name="default")) is None:
            assert time.monotonic() < deadline, f"no default ServiceAccount in {name}"
            time.sleep(0.2)
        try:
            yield name
        finally:
            if node_stack.running is not None:
                kube.delete(api_path("v1", "namespaces", name=name), {"propagationPolicy": "Background"})


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    stack = getattr(item, "funcargs", {}).get("node_stack")
    if report.failed and isinstance(stack, NodeStack) and stack.running is not None:
        report.sections.append(("node logs", stack.running.node.tail_logs(40)))
        report.sections.append(("control plane logs", stack.running.plane.tail_logs(20)))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    timings = config.stash.get(_TIMINGS, {})
    if timings:
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
        terminalreporter.write_line(f"node tier: {parts}")
