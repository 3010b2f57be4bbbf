"""Inference enhancements: spend local compute on answer quality.

- RE2 ("read the question again"): `locomlx.prompt.user_turn(question, reread=True)`;
- self-consistency: `sample_candidates` (N samples in one batched call) then `majority_vote`
  over the evaluation harness's extracted answers (`answer_key`), ties to the higher mean
  token log-probability; code prefers the sample passing the most tests it was shown;
- ensembles: `load_members` makes every registered adapter of a domain resident, and they
  answer in one mixed-adapter batch and vote;
- composition (`a+b`, `a:0.7+b:0.3`) lives in the engine: `Engine.compose`.
"""

from locomlx.boost.answers import answer_key
from locomlx.boost.sampling import Candidate, VoteSettings, sample_candidates, vote_on
from locomlx.boost.voting import Sample, Vote, majority_vote

__all__ = ["Candidate", "Sample", "Vote", "VoteSettings", "answer_key", "majority_vote", "sample_candidates",
           "vote_on"]
