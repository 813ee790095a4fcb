"""The metrics sink: JSONL records survive a torn line; Prometheus text carries the latest values."""

import math

import pytest

from plumbing.metrics import MetricsSink, read_jsonl

pytestmark = pytest.mark.unit


def test_jsonl_and_prometheus(tmp_path):
    sink = MetricsSink(tmp_path / "m.jsonl", labels={"peer": "p1"})
    sink.log({"step": 1, "reward": 0.25, "er": math.nan, "source": "local"})
    sink.log({"step": 2, "reward": 0.5})
    sink.close()
    with (tmp_path / "m.jsonl").open("a") as f:
        f.write('{"step": 3, "rew')  # a crash mid-write
    rows = read_jsonl(tmp_path / "m.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["er"] is None and rows[0]["source"] == "local"
    text = sink.prometheus_text()
    assert 'rankswarm_reward{peer="p1"} 0.5' in text
    assert "# TYPE rankswarm_step gauge" in text
