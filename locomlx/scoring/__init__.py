"""Scoring answers, with no model code: the metric registry and answer extraction, the pass@1 sandbox,
statistics, the results.json schema and the acceptance bar."""
