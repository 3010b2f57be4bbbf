"""The engine: one resident base model, many resident LoRA adapters, generation."""
