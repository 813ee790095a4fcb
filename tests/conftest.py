"""Shared pytest set-up: keep torch to the cores CI has and make runs reproducible."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_xdist_make_scheduler(config, log):
    """How `make test` hands tests to its pytest-xdist workers (`--dist loadscope`): a test module is one unit,
    whose tests share module-scoped fixtures (a swarm started once), and so is the whole deploy tier, whose
    modules share one podman store, the image and the one-node Slurm, so run one after another. (pytest-xdist's
    `xdist_group` marks do this no more under pytest 9.2: the worker's rewritten node ids are ignored.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleOrDeployTier(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:  # pytest-xdist's one point of extension for scopes
            return "tests/deploy" if nodeid.startswith("tests/deploy/") else nodeid.split("::", 1)[0]

    return ModuleOrDeployTier(config, log)


def pytest_configure(config) -> None:
    config.deploy_timings = {}  # what the deploy tier measured (tests/deploy/conftest.py), printed at the end


def pytest_testnodedown(node, error) -> None:  # a pytest-xdist worker ended: take what its deploy tier measured
    node.config.deploy_timings.update(getattr(node, "workeroutput", {}).get("deploy_timings", {}))


def pytest_terminal_summary(terminalreporter) -> None:
    timings = terminalreporter.config.deploy_timings
    if timings:
        terminalreporter.write_line("deploy tier: " + ", ".join(f"{k} {v}" for k, v in timings.items()))
