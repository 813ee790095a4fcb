"""The rankswarm coordinator: merges the peers' meta-signals into swarm-wide baselines each round,
and shows operators the swarm.

Parts: `rounds` (pure merge maths), `store` (SQLite history), `events` (swarm event log),
`ledger` (round state + store + events), `health` (pure rules: peer states, alerts, summary),
`monitor` (applies them, keeps alert start times), `service` (gRPC edge), `dashboard` (HTTP:
the page, JSON API and /metrics), `server` (the `Coordinator` owner that wires a DHT participant,
the round loop, gRPC, HTTP and the store) and `client` (typed gRPC client and the terminal
status summary). Run it with `rankswarm coordinator`.
"""
