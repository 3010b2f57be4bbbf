"""Base models: resolving a reference to an mlx-lm directory, GGUF conversion, loading."""
