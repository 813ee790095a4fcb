"""rankswarm's wire contract: `swarm.proto`, the Python code generated from it, and `protos.records`.

Every record that crosses a process boundary (DHT or gRPC) is one message of `swarm.proto`;
`protos.records` validates, encodes and decodes them against the rules declared there.
Regenerate the code with `python -m protos.generate` from the repository root.

This module stays free of imports: light configs read `RUN_ID_PATTERN` without protobuf.
"""

import re

# what `(rule).run_id` in swarm.proto accepts, and what names DHT keys (plumbing.dht_keys)
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
