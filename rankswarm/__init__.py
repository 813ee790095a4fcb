"""rankswarm: the command-line entry point and the plumbing shared by the node and the coordinator."""
