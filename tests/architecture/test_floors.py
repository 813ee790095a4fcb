"""The floors of the house: which package may import which, read from the source itself.

    rankswarm (the command)                      floor 4: wires the roles, imports anything below
    node (the peer)  |  coordinator              floor 3: never import each other
    plumbing (DHT keys/records, identity, ...)   floor 2
    protos (the wire contract)                   floor 1
    shaping (pure maths)                         floor 0

A module may import its own package and any package on a lower floor. Every import counts,
also one inside a function (a lazy import is still a dependency). docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FLOORS = {"shaping": 0, "protos": 1, "plumbing": 2, "node": 3, "coordinator": 3, "rankswarm": 4}


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level project package) for every import statement in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name.split(".")[0]) for name in names if name.split(".")[0] in FLOORS]
    return found


def upward_or_sideways_imports(repo: Path) -> list[str]:
    broken = []
    for package, floor in FLOORS.items():
        for path in sorted((repo / package).rglob("*.py")):
            for line, imported in project_imports(path):
                if imported != package and FLOORS[imported] >= floor:
                    broken.append(f"{path.relative_to(repo)}:{line} ({package}, floor {floor}) imports "
                                  f"{imported} (floor {FLOORS[imported]})")
    return sorted(broken)


def test_every_package_imports_only_itself_and_lower_floors():
    assert upward_or_sideways_imports(REPO) == []


def test_every_top_level_package_has_a_floor():
    # a new package must be placed on a floor before it can be checked
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == set(FLOORS), f"packages without a floor: {sorted(packages - set(FLOORS))}"


def test_the_check_sees_a_lazy_upward_import(tmp_path):
    for package in FLOORS:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "node" / "peer.py").write_text("def f():\n    from coordinator.server import main\n")
    (tmp_path / "shaping" / "rank.py").write_text("import plumbing.metrics\n")
    assert upward_or_sideways_imports(tmp_path) == [
        "node/peer.py:2 (node, floor 3) imports coordinator (floor 3)",
        "shaping/rank.py:1 (shaping, floor 0) imports plumbing (floor 2)"]
