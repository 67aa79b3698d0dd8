"""The package layout: one import name (alphatune), no import cycle, each package importing only what the map in
docs/design.md allows, and the command working beside foreign packages called datasets, models, search, spaces."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alphatune import datasets
from planted import TINY_SPACE, planted_dataset
from limits import HANG_SECONDS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"alphatune": "alphatune", "alphatune.storage": "alphatune/storage", "alphatune.datasets": "datasets",
            "alphatune.models": "models", "alphatune.spaces": "spaces", "alphatune.evaluation": "evaluation",
            "alphatune.search": "search"}
# What each package may import (docs/design.md); alphatune.arguments is the shared command-line helper.
ALLOWED = {
    "alphatune.storage": set(),  # the storage layer stands on its own: everything else asks it
    "alphatune.datasets": {"alphatune.arguments", "alphatune.storage"},
    "alphatune.models": {"alphatune", "alphatune.arguments", "alphatune.storage", "alphatune.progress"},
    "alphatune.spaces": {"alphatune.models"},
    "alphatune.evaluation": {"alphatune", "alphatune.arguments", "alphatune.storage", "alphatune.progress",
                             "alphatune.datasets", "alphatune.models", "alphatune.spaces"},
    "alphatune.search": {"alphatune", "alphatune.arguments", "alphatune.storage", "alphatune.progress",
                         "alphatune.datasets", "alphatune.models", "alphatune.spaces", "alphatune.evaluation",
                         "alphatune.interrupts"},
}
for package, allowed in ALLOWED.items():  # a folder imported under its bare name hands over (alphatune._folders)
    if package != "alphatune.storage":
        allowed.add("alphatune._folders")


def module_imports() -> dict[str, set[str]]:
    """Module → the project modules it imports, at module level or inside a function (a lazy import is an import
    all the same: a circle through one is a circle)."""
    modules = {}
    for package, folder in PACKAGES.items():
        for path in (ROOT / folder).glob("*.py"):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {target for target in imported if target in modules and target != name}
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and ".".join(parts[:2]) in PACKAGES else module


def test_no_module_imports_itself_through_others() -> None:
    graph = module_imports()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(target == goal or (target not in seen and (seen.add(target) or reaches(target, goal, seen)))
                   for target in graph[start])

    assert not [module for module in graph if reaches(module, module, set())]


def test_each_package_imports_only_what_the_map_allows() -> None:
    for module, targets in module_imports().items():
        package = package_of(module)
        if package not in ALLOWED:
            continue
        foreign = {package_of(target) for target in targets} - {package} - ALLOWED[package]
        assert not foreign, f"{module} imports {sorted(foreign)}"


def test_only_alphatune_is_installed_as_a_top_level_name(tmp_path: Path) -> None:
    script = "import importlib.util as u; print([n for n in ('datasets', 'models', 'search', 'spaces', 'evaluation') " \
             "if u.find_spec(n)])"
    found = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def foreign_packages(tmp_path_factory) -> Path:
    """Packages named like the project's folders (as Hugging Face's ``datasets`` is), unusable as ours."""
    root = tmp_path_factory.mktemp("foreign")
    for name in ("datasets", "models", "search", "spaces", "evaluation"):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(f"raise ImportError('this is a foreign package called {name}')\n")
    return root


def test_the_command_and_a_search_run_beside_foreign_packages_of_the_same_names(foreign_packages: Path,
                                                                              tmp_path: Path) -> None:
    datasets.save(planted_dataset(n_days=60, n_stocks=30, seed=4), tmp_path / "data")
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    env = {**os.environ, "PYTHONPATH": f"{foreign_packages}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    listed = subprocess.run([sys.executable, "-m", "alphatune", "models", "list"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=HANG_SECONDS)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "igmtf" in listed.stdout
    searched = subprocess.run([sys.executable, "-m", "alphatune", "search", "run", "--space", str(tmp_path / "space.yaml"),
                               "--data", str(tmp_path / "data"), "--samples", "2", "--max-epochs", "1", "--confirm", "0",
                               "--storage-path", str(tmp_path / "runs"), "--name", "beside"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=HANG_SECONDS)
    assert searched.returncode == 0, searched.stdout[-2000:] + searched.stderr[-3000:]
    assert (tmp_path / "runs" / "beside" / "lstm" / "best.yaml").is_file()


NAMES = ("datasets", "models", "search", "spaces", "evaluation")


def test_in_a_checkouts_root_a_bare_import_hands_over_to_the_installed_package_of_that_name(tmp_path: Path) -> None:
    """Python started in the repository root finds the folders first (the working directory leads sys.path). A
    folder imported under its bare name hands over to an installed package of that name (Hugging Face's
    ``datasets``, here a package of our own making with a submodule its __init__ imports, as HF's does), and
    alphatune's own packages still import beside it."""
    site = tmp_path / "site"
    for name in NAMES:
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(f"from {name}.part import where\n")
        (site / name / "part.py").write_text(f"where = 'the installed {name}'\n")
    script = ("import importlib\n"
              f"for name in {NAMES!r}:\n"
              "    print(importlib.import_module(name).where)\n"
              "from datasets import where\n"
              "from alphatune import datasets, models\n"
              "print(datasets.DataSpec.__module__, models.get_spec('lstm').name)\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=HANG_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [f"the installed {name}" for name in NAMES] + [
        "alphatune.datasets.spec lstm"]


@pytest.mark.parametrize("name", NAMES)
def test_in_a_checkouts_root_a_bare_import_without_such_a_package_says_to_import_alphatune(name: str) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=HANG_SECONDS)
    installed = subprocess.run([sys.executable, "-c", f"import importlib.util as u; print(bool(u.find_spec({name!r})))"],
                               cwd=ROOT.parent, env=env, capture_output=True, text=True, timeout=HANG_SECONDS)
    if installed.stdout.strip() == "True":
        pytest.skip(f"a package named {name} is installed here: the hand-over test above covers it")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"ImportError: `import {name}` found the folder {ROOT / name}, which is alphatune.{name}: import "
        f"alphatune.{name} (no other package named {name!r} is installed)")
