"""Single-peer RL training: rollouts, the policy forward, the GRPO/PPO loss, evaluation and checkpoints."""
