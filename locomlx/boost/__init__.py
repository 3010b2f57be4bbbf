"""Inference enhancements: spend local compute on answer quality.

- RE2 ("read the question again"): `locomlx.prompt.user_turn(question, reread=True)`;
- self-consistency (sampling.py): N samples in one batched call, then `majority_vote` (voting.py) over
  the metric's own extracted answers (locomlx/scoring/metrics.py), ties to the higher mean token
  log-probability; code prefers the sample passing the most tests it was shown;
- ensembles (ensemble.py): every registered adapter of a domain is resident, and they answer in one
  mixed-adapter batch and vote;
- composition (`a+b`, `a:0.7+b:0.3`) lives in the engine: `Engine.compose`.
"""
