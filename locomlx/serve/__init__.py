"""The server: an HTTP API over the library `Session` (locomlx/session.py). Empty until `locomlx serve` lands."""
