"""shaping/ is pure maths: importing it brings no networking, no other ML framework, no project code.

Checked in a clean interpreter, because the test process itself has imported everything else.
`import torch` alone already loads socket, asyncio and torch.distributed, so the rule is relative
to torch: shaping may add only the standard library, pydantic (its configs) and itself.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("hivemind", "grpc", "google.protobuf", "transformers", "tokenizers", "safetensors", "requests",
             "urllib3", "httpx", "aiohttp", "zmq", "multiaddr", "tensorflow", "jax", "node", "coordinator",
             "rankswarm", "protos", "plumbing")
ALLOWED_THIRD_PARTY = {"pydantic", "pydantic_core", "annotated_types", "typing_extensions", "typing_inspection"}
ALLOWED_IMPORTS = {"__future__", "collections", "dataclasses", "importlib", "math", "typing", "torch", "pydantic",
                   "shaping"}


def modules_after(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=True)
    assert out.stderr == "", out.stderr  # importing shaping must not warn or log
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def imported() -> tuple[set[str], set[str]]:
    return modules_after("import torch"), modules_after("from shaping import *")  # every module of the package


def top_level(name: str) -> str:
    return name.split(".")[0]


def test_no_networking_or_other_frameworks_are_imported(imported):
    _, with_shaping = imported
    found = sorted(m for m in with_shaping if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
    assert found == [], f"importing shaping pulled in {found}"


def test_shaping_adds_only_stdlib_and_pydantic_to_torch(imported):
    torch_only, with_shaping = imported
    added = {top_level(m) for m in with_shaping - torch_only}
    stdlib = set(sys.stdlib_module_names)
    extra = sorted(m for m in added if m not in stdlib and m not in ALLOWED_THIRD_PARTY and m != "shaping"
                   and not m.startswith("_sysconfigdata"))
    assert extra == [], f"shaping imports third-party modules beyond torch and pydantic: {extra}"


def test_source_imports_stay_inside_the_allowed_set():
    """A static guard: a lazy import inside a function would escape the subprocess check."""
    for path in sorted((REPO / "shaping").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert top_level(name) in ALLOWED_IMPORTS, f"{path.name}:{node.lineno} imports {name}"
