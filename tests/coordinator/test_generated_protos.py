"""The committed generated code matches swarm.proto, and every field of the contract is documented."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GENERATED = ("swarm_pb2.py", "swarm_pb2_grpc.py", "swarm_pb2.pyi")


@pytest.mark.unit
def test_committed_generated_code_is_fresh(tmp_path):
    subprocess.run([sys.executable, "-m", "protos.generate", "--out", str(tmp_path)], cwd=REPO, check=True,
                   capture_output=True, timeout=120)
    for name in GENERATED:
        fresh = (tmp_path / "protos" / name).read_text()
        committed = (REPO / "protos" / name).read_text()
        assert fresh == committed, f"protos/{name} is stale: run `python -m protos.generate` and commit the result"


@pytest.mark.unit
def test_generated_imports_are_package_relative():
    assert "from protos import swarm_pb2" in (REPO / "protos" / "swarm_pb2_grpc.py").read_text()


@pytest.mark.unit
def test_every_field_and_enum_value_names_its_protocol_step():
    text = (REPO / "protos" / "swarm.proto").read_text()
    steps = set(re.findall(r"^//\s+\[([A-Z]+)\]", text, flags=re.M))
    assert {"PUBLISH", "MERGE", "BROADCAST", "SHAPE", "STATUS", "CLAIM", "OBSERVE", "VERSION", "VALIDATE"} <= steps
    # a declaration may carry its rules as options: `double accuracy = 16 [(rule) = {min: 0, max: 1}];`
    declarations = re.findall(r"^\s+(?:optional |repeated )?[\w.]+ \w+ = \d+(?: \[[^\]]*(?:\][^\]]*)?\])?;.*$",
                              text, flags=re.M)
    declarations += re.findall(r"^\s+[A-Z_]+ = \d+;.*$", text, flags=re.M)
    assert len(declarations) > 80
    for line in declarations:
        match = re.search(r"//\s*\[([A-Z]+)\]", line)
        assert match and match.group(1) in steps, f"undocumented or unknown protocol step: {line.strip()}"
    for message in re.findall(r"^message (\w+)", text, flags=re.M):
        body = text.split(f"message {message} {{", 1)[1].split("\n}", 1)[0]
        top_level = message.endswith(("Request", "Response")) or message in {
            "MetaSignal", "BalanceWeights", "PeerStatus", "WeightsClaim", "SwarmEvent", "SwarmState"}
        assert not top_level or "schema_version = 1;" in body, f"{message} has no schema_version field 1"
        assert not top_level or "option (record).latest_schema = " in body, f"{message} names no latest schema"
