"""The embedded tiny policy: char tokenizer, Qwen2-style model, SFT warm-up, and `load_policy`."""
