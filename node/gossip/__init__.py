"""Compressed gradient gossip between peers (hivemind averaging with PowerSGD)."""
