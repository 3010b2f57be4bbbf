"""Adapter files on disk: their format and where to find them by name."""
