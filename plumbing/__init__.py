"""Plumbing shared by the peer and the coordinator: DHT keys and records, the signing identity,
joining the DHT, config loading, the metrics sink, numbers written for people (`formatting`),
child processes and startup errors.

It sits above `shaping/` and `protos/` and below `node/` and `coordinator/`, which never import
each other; the `rankswarm` command sits on top (docs/architecture.md, tests/test_floors.py).
"""

__version__ = "0.1.0"  # the package's version (pyproject.toml reads it from here)
