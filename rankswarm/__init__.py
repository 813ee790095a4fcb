"""rankswarm: the command-line entry points (`rankswarm demo|train|node|coordinator|status|config`).

The top floor: it wires `node/` and `coordinator/`, which never import it (docs/architecture.md).
"""

from plumbing import __version__

__all__ = ["__version__"]
