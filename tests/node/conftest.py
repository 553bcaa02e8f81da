"""The node tier's fixtures: ``installed`` is the chart ``helm install``ed on the real node (per
module), with values for the image only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.helm import CHART, helm, helm_env, values_args
from tests.harness.node_fixtures import NodeStack
from tests.node.chart import OPERATOR_NS, RELEASE, Installed, image_values


@pytest.fixture(scope="module")
def installed(node_stack: NodeStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    running = node_stack.get()
    tmp = tmp_path_factory.mktemp("helm")
    kubeconfig = str(running.plane.kubeconfig)
    helm(
        "install", RELEASE, str(CHART), "-n", OPERATOR_NS, "--create-namespace", "--kubeconfig", kubeconfig,
        *values_args(image_values(running), tmp), env=helm_env(tmp),
    )  # fmt: skip
    with running.kube() as kube:
        yield Installed(running, kube)
    if node_stack.running is running:
        helm(
            "uninstall",
            RELEASE,
            "-n",
            OPERATOR_NS,
            "--kubeconfig",
            kubeconfig,
            env=helm_env(tmp),
            check=False,
        )
