"""The layout promise: nothing of ours shadows the standard library's ``operator``."""

import ast
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


def _imported_test_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [n for n in names if n == "tests" or n.startswith("tests.")]


def test_no_tier_imports_another_tiers_test_modules() -> None:
    """A tier uses its own modules and the shared harness (tests/harness/), never another tier's
    test modules, kits or conftest; the harness uses no tier."""
    tests = ROOT / "tests"
    wrong: list[str] = []
    for path in sorted(tests.rglob("*.py")):
        part = path.relative_to(tests).parts
        if len(part) < 2:  # tests/conftest.py, tests/__init__.py
            continue
        own = part[0]
        allowed = {"harness"} if own == "harness" else {own, "harness"}
        for name in _imported_test_modules(path):
            pieces = name.split(".")
            if len(pieces) < 2 or pieces[1] not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, wrong
