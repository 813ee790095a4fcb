"""The swarm peer: the single-node trainer with gossip updates, global baselines and meta-signals."""
