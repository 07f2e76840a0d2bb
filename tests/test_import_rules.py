"""Rules of the package layout: imports run one way, and importing ``monai_ext`` leaves matplotlib's backend alone."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "monai_ext"
#: packages that must not import the engine plug-ins, transforms or plots
BASE_PACKAGES = ("losses", "attacks", "metrics")
FORBIDDEN = ("monai_ext.handlers", "monai_ext.transforms", "monai_ext.visualize")


def _imports(path: Path) -> list[str]:
    """The modules a file imports (absolute names; relative imports resolved against the file's package)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


@pytest.mark.parametrize("package", BASE_PACKAGES)
def test_base_packages_do_not_import_plugins(package: str) -> None:
    bad = [
        f"{path.relative_to(PACKAGE.parent)}: {name}"
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for name in _imports(path)
        if name.startswith(FORBIDDEN)
    ]
    assert not bad, bad


def test_utils_import_no_other_monai_ext_package() -> None:
    """``monai_ext.utils`` is imported by every package, so it imports none of them (no cycles)."""
    bad = [
        f"{path.relative_to(PACKAGE.parent)}: {name}"
        for path in sorted((PACKAGE / "utils").rglob("*.py"))
        for name in _imports(path)
        if name.startswith("monai_ext") and not name.startswith("monai_ext.utils")
    ]
    assert not bad, bad


def test_no_module_imports_pyplot_or_sets_a_backend() -> None:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        bad += [f"{path.name}: {name}" for name in _imports(path) if name.startswith("matplotlib.pyplot")]
        calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
        bad += [
            f"{path.name}: matplotlib.use"
            for f in calls
            if isinstance(f, ast.Attribute) and f.attr == "use" and isinstance(f.value, ast.Name)
            and f.value.id == "matplotlib"
        ]  # fmt: skip
    assert not bad, bad


def _python(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"} | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    return done.stdout.strip()


def test_import_keeps_the_callers_backend(tmp_path: Path) -> None:
    """The caller's backend stays (the plots draw on matplotlib's ``Figure`` without pyplot), and PNGs are written."""
    code = (
        "import matplotlib; matplotlib.use('svg'); before = matplotlib.rcParams['backend']\n"
        "import monai_ext\n"
        "from monai_ext.visualize import plot_unit_scores\n"
        f"path = plot_unit_scores([0.5, 0.2], {str(tmp_path / 'u.png')!r})\n"
        "print(before, matplotlib.rcParams['backend'], path.stat().st_size > 1000)"
    )
    assert _python(code) == "svg svg True"
    # with no backend chosen, none is chosen for the caller either (the setting stays matplotlib's automatic one)
    code = "import matplotlib; b = matplotlib.rcParams._get('backend'); import monai_ext\n"
    code += "print(matplotlib.rcParams._get('backend') is b)"
    assert _python(code) == "True"
