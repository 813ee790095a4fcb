"""rankswarm's wire contract: `swarm.proto` and the Python code generated from it.

Regenerate with `python -m protos.generate` from the repository root; `protos.convert`
turns the generated messages into typed Python objects where they enter a process.
"""
