"""Evaluation: metrics per example, statistics over a benchmark."""
