"""The rankswarm peer: rollouts, rewards, VERL-shaped GRPO updates and swarm participation."""
