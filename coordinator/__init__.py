"""The rankswarm coordinator: merges the peers' meta-signals into swarm-wide baselines each round.

Parts: `rounds` (pure merge maths), `store` (SQLite history), `events` (swarm event log),
`ledger` (round state + store + events), `service` (gRPC edge), `server` (the `Coordinator`
owner that wires a DHT participant, the round loop, gRPC and the store) and `client`
(typed gRPC client and the terminal status summary). Run it with `rankswarm coordinator`.
"""
