"""pyproject.toml declares what the installed packages (genrl, rewards) import, and nothing they do not use."""

import ast
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from rewards.optional import OPTIONAL_PACKAGES

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

#: Core dependencies no module imports by name, and what needs them.
USED_INDIRECTLY = {
    "tensorboard": "accelerate's tracker for log.log_with, whose default is tensorboard",
    "torchvision": "open_clip's image transforms; the tests' reference transforms",
}


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()


CORE = {_name(r) for r in PROJECT["dependencies"]}
EXTRAS = {extra: {_name(r) for r in reqs} for extra, reqs in PROJECT["optional-dependencies"].items()}


def _absolute_imports(folder: str):
    """``(top-level module, file)`` for every absolute import in ``folder`` (lazy ones too)."""
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names}:
                yield top, path.relative_to(ROOT).as_posix()


def _imports() -> dict[str, list[str]]:
    """Top-level third-party modules imported anywhere in genrl/ and rewards/ (lazy imports too) -> files."""
    found: dict[str, list[str]] = {}
    for folder in ("genrl", "rewards"):
        for top, path in _absolute_imports(folder):
            if top not in sys.stdlib_module_names and top not in ("genrl", "rewards"):
                found.setdefault(top, []).append(path)
    return found


def test_every_imported_module_comes_from_a_core_dependency():
    providers = packages_distributions()
    undeclared = {module: files for module, files in _imports().items()
                  if not {_name(d) for d in providers.get(module, [module])} & CORE}
    assert not undeclared, f"imported but not declared in pyproject.toml's dependencies: {undeclared}"


def test_every_core_dependency_is_imported_or_says_what_needs_it():
    imported = set(_imports())
    modules: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            modules.setdefault(_name(dist), set()).add(module)
    unused = sorted(d for d in CORE - set(USED_INDIRECTLY) if not modules.get(d, set()) & imported)
    assert not unused, f"declared dependencies nothing in genrl or rewards imports: {unused}"
    assert set(USED_INDIRECTLY) <= CORE


def test_optional_modules_are_extras_and_imported_only_through_require():
    for module, (dist, extra) in OPTIONAL_PACKAGES.items():
        assert _name(dist) in EXTRAS.get(extra, set()), f"{module}: extra {extra!r} does not install {dist}"
        assert _name(dist) not in CORE
    plain = set(_imports()) & set(OPTIONAL_PACKAGES)
    assert not plain, f"optional modules imported directly instead of through rewards.optional.require: {plain}"


def test_rewards_neither_import_nor_load_genrl():
    # rewards is installable and servable on its own: no genrl import anywhere in it, lazy ones included
    # (the toy world's description and reward models live in rewards.toyworld) ...
    offenders = sorted({path for top, path in _absolute_imports("rewards") if top == "genrl"})
    assert not offenders, f"rewards imports genrl in {offenders}"
    # ... and importing it, with every reward registered, loads no genrl module
    code = ("import sys, rewards; rewards.available_rewards(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'genrl'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"

