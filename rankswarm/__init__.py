"""rankswarm: the command-line entry point and the plumbing shared by the node and the coordinator."""

__version__ = "0.1.0"  # keep equal to pyproject.toml's version (tests/rankswarm/test_version.py)
