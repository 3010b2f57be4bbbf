"""Training and benchmark data: reading JSONL examples and checking them before use."""
