"""The metrics sink: JSONL records survive a torn line; the latest numeric values stay at hand."""

import math

import pytest

from plumbing.metrics import MetricsSink, read_jsonl

pytestmark = pytest.mark.unit


def test_jsonl_and_latest_values(tmp_path):
    sink = MetricsSink(tmp_path / "m.jsonl")
    sink.log({"step": 1, "reward": 0.25, "er": math.nan, "source": "local"})
    sink.log({"step": 2, "reward": 0.5})
    sink.close()
    with (tmp_path / "m.jsonl").open("a") as f:
        f.write('{"step": 3, "rew')  # a crash mid-write
    rows = read_jsonl(tmp_path / "m.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["er"] is None and rows[0]["source"] == "local"
    latest = sink.latest()
    assert latest["reward"] == 0.5 and latest["step"] == 2.0 and "er" not in latest and "source" not in latest
