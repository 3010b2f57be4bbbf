"""`eval/results.json`: the one place its format is defined, written and validated.

Fields of the contributing guide (adapter, base_model, quantization, benchmark,
n_examples, metric, adapter_score, base_model_score, improvement, timestamp)
plus what makes a result reproducible and honest: benchmark sha256, 95%
bootstrap intervals, the paired p-value, inference config, hardware, versions
and duration. `SCHEMA` documents every field; `validate_results` checks a file.
"""

from __future__ import annotations

import json
from pathlib import Path

from locomlx.errors import LocomlxError

SCHEMA: dict[str, tuple[type | tuple, str]] = {
    "adapter": (str, "adapter name"),
    "base_model": (str, "base model reference (e.g. smollm2-135m)"),
    "quantization": (str, "weights of the base: e.g. 4-bit (computed in float32)"),
    "benchmark": (str, "benchmark path"),
    "benchmark_sha256": (str, "sha256 of the benchmark file"),
    "n_examples": (int, "examples scored"),
    "metric": (str, "the registered metric it was scored with (exact_match, choice, rouge_l, pass@1, judge, ...)"),
    "adapter_score": ((int, float), "mean score of base + adapter, 0..1"),
    "base_model_score": ((int, float), "mean score of the base model, 0..1"),
    "improvement": ((int, float), "adapter_score - base_model_score (absolute)"),
    "relative_improvement": ((int, float, type(None)), "improvement / base_model_score (null when the base scores 0)"),
    "adapter_ci95": (list, "[low, high] bootstrap 95% interval of adapter_score"),
    "base_model_ci95": (list, "[low, high] bootstrap 95% interval of base_model_score"),
    "p_value": ((int, float), "paired test, adapter vs base (McNemar exact for 0/1 scores, else paired bootstrap)"),
    "significant": (bool, "p_value < 0.05 and improvement > 0"),
    "ood": (list, "per other benchmark: {benchmark, benchmark_sha256, metric, n_examples, adapter_score, "
                  "base_model_score, degradation}"),
    "ood_degradation": ((int, float), "largest base_model_score - adapter_score over the ood benchmarks (0 if none)"),
    "passed": (bool, "significant in-domain gain and ood_degradation <= 0.05"),
    "judge_sd": ((int, float, type(None)), "judge metric: standard deviation of the adapter's score over the "
                                           "judge's k passes (null for other metrics)"),
    "inference": (dict, "max_tokens, limit, ood_limit, batch_size, decoding, reread, votes, vote_temperature, "
                        "seed, ensemble"),
    "hardware": (str, "machine, CPUs, MLX device, BLAS"),
    "locomlx_version": (str, "version that produced the file"),
    "duration_seconds": ((int, float), "wall time of the whole evaluation"),
    "timestamp": (str, "UTC, ISO 8601"),
}


def validate_results(data: dict, where: str = "results.json") -> list[str]:
    """Every problem with a results record, each naming its field; empty when valid."""
    if not isinstance(data, dict):
        return [f"{where}: expected a JSON object"]
    problems = []
    for name, (kind, meaning) in SCHEMA.items():
        if name not in data:
            problems.append(f"{where}: field '{name}' is missing ({meaning})")
        elif not isinstance(data[name], kind) or (kind in (int, (int, float)) and isinstance(data[name], bool)):
            problems.append(f"{where}: field '{name}' has type {type(data[name]).__name__} ({meaning})")
    for name in ("adapter_score", "base_model_score"):
        value = data.get(name)
        if isinstance(value, (int, float)) and not 0 <= value <= 1:
            problems.append(f"{where}: field '{name}' = {value} is outside 0..1")
    for name in ("adapter_ci95", "base_model_ci95"):
        value = data.get(name)
        if isinstance(value, list) and (len(value) != 2 or value[0] > value[1]):
            problems.append(f"{where}: field '{name}' must be [low, high]")
    extra = sorted(set(data) - set(SCHEMA))
    if extra:
        problems.append(f"{where}: unknown field(s) {', '.join(extra)}")
    return problems


def read_results(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LocomlxError(f"Cannot read {path}: {exc}") from exc
    problems = validate_results(data, str(path))
    if problems:
        raise LocomlxError("\n".join(problems))
    return data
