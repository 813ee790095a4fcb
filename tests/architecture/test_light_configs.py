"""Every config model can be read, validated and printed without torch, grpc or hivemind.

Config models are found in the source (classes named `*Config` that derive from a pydantic
model), so a new one is checked without touching this file. Each defining module is imported
in a clean interpreter, because this test process has long imported everything.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("shaping", "protos", "plumbing", "node", "coordinator", "rankswarm")
HEAVY = ("torch", "grpc", "hivemind", "transformers", "tokenizers", "safetensors", "google.protobuf")
PYDANTIC_BASES = {"BaseModel", "RootModel"}


def config_classes(repo: Path) -> dict[str, list[str]]:
    """module name -> the config classes it defines."""
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((repo / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in tree.body:
                if not (isinstance(node, ast.ClassDef) and node.name.endswith("Config")):
                    continue
                bases = {ast.unparse(base).split("[")[0].split(".")[-1] for base in node.bases}
                if bases & PYDANTIC_BASES or any(base.endswith("Config") for base in bases):
                    module = ".".join(path.relative_to(repo).with_suffix("").parts).removesuffix(".__init__")
                    found.setdefault(module, []).append(node.name)
    return found


def heavy_modules_after_import(module: str, classes: list[str]) -> list[str]:
    """Import `module` in a clean interpreter, build each config that needs no arguments, dump it to
    JSON; return the heavy modules that came along."""
    script = (f"import json, sys\nimport {module} as m\nfor name in {classes!r}:\n"
              "    cls = getattr(m, name)\n"
              "    if not any(f.is_required() for f in getattr(cls, 'model_fields', {}).values()):\n"
              "        cls().model_dump_json()\n"
              f"print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in {HEAVY!r} "
              f"or any(n.startswith(h + '.') or n == h for h in {HEAVY!r}))))")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


CONFIGS = config_classes(REPO)


def test_the_configs_are_found():
    names = {name for classes in CONFIGS.values() for name in classes}
    assert {"TrainConfig", "NodeConfig", "CoordinatorConfig", "DemoConfig", "ShapingConfig", "LossConfig",
            "SamplingConfig", "GossipConfig", "DHTConfig", "HealthConfig"} <= names


@pytest.mark.parametrize("module", sorted(CONFIGS))
def test_a_config_module_imports_without_heavy_libraries(module):
    assert heavy_modules_after_import(module, CONFIGS[module]) == [], f"{module} pulls in heavy libraries"
