"""Training a LoRA adapter: configuration, tokenized data, the resumable loop, the adapter directory."""
