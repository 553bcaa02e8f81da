"""manifests/: the plain-YAML install, kept in step with the chart, and the example release."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path
from typing import Any

import yaml
from pydantic.alias_generators import to_camel

from tests.harness.helm import MANIFESTS, ROOT, helm_binary
from webrelease.copier.spec import load_release


def load_dir(path: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for f in sorted(path.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text(encoding="utf-8")) if d]
    return docs


def test_manifests_and_argocd_patch_match_their_sources(tmp_path: Path) -> None:
    """scripts/gen-manifests.sh regenerates manifests/*.yaml (helm template of the chart) and the
    argocd-cm patch; a difference means someone edited one without regenerating."""
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-manifests.sh"), str(tmp_path)],
        check=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HELM": str(helm_binary())},
    )
    generated = sorted(p.name for p in (tmp_path / "manifests").glob("*.yaml"))
    committed = sorted(p.name for p in MANIFESTS.glob("*.yaml"))
    assert generated == committed
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "manifests", MANIFESTS, generated, shallow=False)
    assert not mismatch and not errors, f"run `make generate`: {mismatch or errors} differ"
    assert filecmp.cmp(
        tmp_path / "argocd" / "argocd-cm-patch.yaml", ROOT / "argocd" / "argocd-cm-patch.yaml", False
    )


def test_manifests_are_a_complete_install() -> None:
    docs = load_dir(MANIFESTS)
    kinds = [d["kind"] for d in docs]
    assert kinds[:2] == ["CustomResourceDefinition", "Namespace"], (
        "CRD and namespace first (kubectl applies in order)"
    )
    assert set(kinds) == {
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",  # the leader-election Lease, in the operator's namespace
        "RoleBinding",
        "Deployment",
        "Service",
    }
    (ns,) = [d for d in docs if d["kind"] == "Namespace"]
    for d in docs:
        if d["kind"] in {"ServiceAccount", "Deployment", "Service", "Role", "RoleBinding"}:
            assert d["metadata"]["namespace"] == ns["metadata"]["name"]
    # the CRD is the generated one (manifests/crd/, written by `python -m webrelease.operator.crd`)
    (crd,) = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    (generated_crd,) = load_dir(MANIFESTS / "crd")
    assert crd == generated_crd


def test_example_release_is_valid_and_uses_every_section() -> None:
    """The example is what users start from: it must parse with the same models the operator
    uses, and show every part of the spec."""
    path = MANIFESTS / "examples" / "release.yaml"
    release = load_release(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert release.metadata.name == raw["metadata"]["name"]
    assert "namespace" not in raw["metadata"], "applied with -n, like any namespaced example"
    every_section = {to_camel(f) for f in type(release.spec).model_fields}
    assert every_section - set(raw["spec"]) == set(), "every spec section is shown"
