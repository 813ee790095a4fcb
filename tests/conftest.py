"""Shared pytest set-up: keep torch to the cores CI has and make runs reproducible."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


DEPLOY_TIMINGS: dict = {}  # what the deploy tier measured, reported by the pytest-xdist worker that ran it


def pytest_testnodedown(node, error) -> None:
    DEPLOY_TIMINGS.update(getattr(node, "workeroutput", {}).get("deploy_timings", {}))


def pytest_terminal_summary(terminalreporter) -> None:
    if DEPLOY_TIMINGS:
        terminalreporter.write_line("deploy tier: " + ", ".join(f"{k} {v}" for k, v in DEPLOY_TIMINGS.items()))
