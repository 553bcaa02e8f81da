"""The chart and the operator agree: the Deployment's command line parses with the real `webrelease`
CLI, and every WEBRELEASE_* variable it sets is read by the operator's settings with the value the
chart's user gave."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tests.harness.helm import by_kind, template
from webrelease.cli import build_parser
from webrelease.operator.settings import OperatorSettings


def operator_container(tmp_path: Path, values: dict[str, Any] | None = None) -> dict[str, Any]:
    (dep,) = by_kind(template(tmp_path, values), "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dict(c)


def parsed(container: dict[str, Any]) -> argparse.Namespace:
    assert container["command"] == ["webrelease"]
    return build_parser().parse_args(container["args"])


def settings(container: dict[str, Any]) -> OperatorSettings:
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert all(name.startswith("WEBRELEASE_") for name in env)
    unknown = {n for n in env if n[len("WEBRELEASE_") :].lower() not in OperatorSettings.model_fields}
    assert not unknown, f"the chart sets variables the operator does not read: {unknown}"
    return OperatorSettings.from_env(env)


def test_default_install_command_line_and_settings(tmp_path: Path) -> None:
    c = operator_container(tmp_path)
    args = parsed(c)
    assert args.command == "operator"
    assert args.log_format == "json"
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    assert args.all_namespaces is True and args.namespace == []
    s = settings(c)
    assert s.worker_image == c["image"] == "webrelease:0.1.0"
    assert s.metrics_port == 9090
    assert s.worker_uid == s.worker_gid == 65532
    assert s.worker_resources.requests == {"cpu": "250m", "memory": "256Mi"}
    assert s.worker_resources.limits == {"memory": "1Gi"}  # the operator's default
    assert s.worker_ttl_seconds_after_finished == 86400
    assert s.worker_service_account_name is None


def test_every_value_reaches_the_operator(tmp_path: Path) -> None:
    values = {
        "watchNamespaces": ["shop", "outlet"],
        "operator": {"logFormat": "plain", "logLevel": "verbose", "livenessPort": 8181},
        "metrics": {"port": 9191},
        "worker": {
            "image": "registry.example/webrelease:2",
            "imagePullPolicy": "Always",
            "serviceAccountName": "s3-writer",
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            "nodeSelector": {"pool": "batch"},
            "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
            "runAsUser": 1001,
            "runAsGroup": 1002,
            "ttlSecondsAfterFinished": 600,
        },
    }
    c = operator_container(tmp_path, values)
    args = parsed(c)
    assert args.namespace == ["shop", "outlet"] and not args.all_namespaces
    assert (args.log_format, args.operator_log_level) == ("plain", "verbose")
    assert args.liveness == "http://0.0.0.0:8181/healthz"
    s = settings(c)
    assert s.metrics_port == 9191
    assert s.worker_image == "registry.example/webrelease:2"
    assert s.worker_image_pull_policy == "Always"
    assert s.worker_service_account_name == "s3-writer"
    assert s.worker_resources.requests == {"cpu": "1", "memory": "1Gi"}
    assert s.worker_resources.limits == {"memory": "2Gi"}
    assert s.worker_node_selector == {"pool": "batch"}
    assert [t.key for t in s.worker_tolerations] == ["batch"]
    assert (s.worker_uid, s.worker_gid) == (1001, 1002)
    assert s.worker_ttl_seconds_after_finished == 600


def test_metrics_off_and_no_ttl(tmp_path: Path) -> None:
    s = settings(
        operator_container(
            tmp_path, {"metrics": {"enabled": False}, "worker": {"ttlSecondsAfterFinished": None}}
        )
    )
    assert s.metrics_port == 0
    assert s.worker_ttl_seconds_after_finished is None
