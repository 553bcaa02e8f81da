"""helm for the chart tests: the binary built by scripts/install-helm.sh, and small wrappers.

Used by tests/unit/test_chart*.py (lint, template, schema) and tests/cluster/test_install*.py
(install into the real apiserver). Nothing here starts a server.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "webrelease"
MANIFESTS = ROOT / "manifests"


@functools.cache
def helm_binary() -> Path:
    """The pinned helm, built once into the cache by scripts/install-helm.sh (`make tools` runs it)."""
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install-helm.sh"), "--print-path"],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path.is_file(), path
    return path


def helm(
    *args: str, env: Mapping[str, str] | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run helm; with ``check`` a failure raises with helm's own output in the message."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def values_args(values: Mapping[str, Any] | None, tmp_dir: Path) -> list[str]:
    """``--values FILE`` for a mapping of values (written as YAML into ``tmp_dir``)."""
    if not values:
        return []
    tmp_dir.mkdir(parents=True, exist_ok=True)
    path = tmp_dir / f"values-{len(list(tmp_dir.glob('values-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(dict(values)), encoding="utf-8")
    return ["--values", str(path)]


def template(
    tmp_dir: Path,
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "webrelease",
    namespace: str = "webrelease-system",
    extra: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The objects ``helm template`` renders for ``values``."""
    out = helm(
        "template", release, str(CHART), "--namespace", namespace, *values_args(values, tmp_dir), *extra
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(objects: Sequence[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def helm_env(tmp_path: Path) -> dict[str, str]:
    """helm's own cache and config in the test's temp dir, not in $HOME."""
    return {
        "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
        "HELM_DATA_HOME": str(tmp_path / "helm-data"),
    }
