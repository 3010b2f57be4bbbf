"""Evaluation with models: a benchmark run (run.py), adapter vs base and the verdict (evaluate.py), the judge
metric (judge.py), enhancement comparison (compare.py) and router evaluation (routing.py)."""
