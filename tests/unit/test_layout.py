"""The layout promise: nothing of ours shadows the standard library's ``operator``."""

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stdlib_operator_is_not_shadowed_even_with_repo_root_on_path() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        saved = sys.modules.pop("operator")
        mod = importlib.import_module("operator")
        assert Path(mod.__file__ or "").parent != ROOT / "operator"
        assert hasattr(mod, "itemgetter")
    finally:
        sys.modules["operator"] = saved
        sys.path.remove(str(ROOT))


def test_packages_live_under_the_two_source_roots() -> None:
    import webrelease.copier

    assert Path(webrelease.copier.__file__ or "").parent == ROOT / "copier" / "webrelease" / "copier"
