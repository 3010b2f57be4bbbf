"""Does an adapter fit the registry's base model? Decided from shapes, without loading the base weights.

The base model's architecture is built from its config.json with lazy
(never evaluated) weights, which gives every linear layer's (in, out); the
adapter's safetensors give its LoRA shapes. The base is identified by the
sha256 of its weights file (or its hub revision), recorded in the registry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from locomlx.adapters.format import AdapterFile
from locomlx.models.layers import linear_dims
from locomlx.models.resolve import ResolvedModel, resolve_model
from locomlx.provenance import file_sha256
from locomlx.registry.schema import BaseModelInfo

import mlx.nn as nn


@dataclass
class BaseFacts:
    """What the checks need to know about a base model."""

    resolved: ResolvedModel
    linear_dims: dict[str, tuple[int, int]]  # module path -> (in, out)

    @property
    def fingerprint(self) -> tuple[str, str]:
        return base_fingerprint(self.resolved)


def base_fingerprint(resolved: ResolvedModel) -> tuple[str, str]:
    """('revision', commit) for a hub model, else ('file_sha256', sha of its weights file)."""
    if resolved.source == "hub":
        return "revision", resolved.source_hash
    if resolved.source_hash:  # the GGUF's sha256, recorded at conversion
        return "file_sha256", resolved.source_hash
    files = sorted(resolved.path.glob("*.safetensors"))
    if len(files) == 1:
        return "file_sha256", file_sha256(files[0])
    listing = "".join(f"{file_sha256(f)}  {f.name}\n" for f in files)
    return "file_sha256", hashlib.sha256(listing.encode()).hexdigest()


def inspect_base(reference: str) -> BaseFacts:
    """Resolve the base model and read its linear layer sizes (the weights stay unread)."""
    from mlx_lm.utils import load_model

    resolved = resolve_model(reference)
    model, _ = load_model(resolved.path, lazy=True)
    dims = {name: linear_dims(module) for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, nn.QuantizedLinear))}
    return BaseFacts(resolved, dims)


def _shape_problems(adapter: AdapterFile, base: BaseFacts) -> list[str]:
    """Each LoRA layer that the base model lacks or whose shapes do not fit it."""
    problems = []
    for module, (a, b) in sorted(adapter.layers.items()):
        dims = base.linear_dims.get(module)
        if dims is None:
            problems.append(f"targets '{module}', which the base model {base.resolved.reference} does not have")
        elif (a.shape[0], b.shape[1]) != dims:
            problems.append(f"'{module}' maps {a.shape[0]} -> {b.shape[1]} but the base layer maps "
                            f"{dims[0]} -> {dims[1]}")
    return problems


def incompatibility(adapter: AdapterFile, base: BaseFacts) -> str | None:
    """One sentence on why the adapter does not fit the base (None when it fits)."""
    problems = _shape_problems(adapter, base)
    if not problems:
        return None
    more = f" (and {len(problems) - 3} more layers)" if len(problems) > 3 else ""
    return (f"{'; '.join(problems[:3])}{more}: it was trained for a different base model than "
            f"{base.resolved.reference}")


def base_mismatch(recorded: BaseModelInfo, resolved: ResolvedModel, fingerprint: tuple[str, str]) -> str | None:
    """Why a library's adapters are not for the base model `resolved`, whose `base_fingerprint` is `fingerprint`
    (None when they are): its registry names the base every adapter was trained for by weights hash (or hub
    revision), which a different model with the same layer sizes would not share."""
    kind, value = fingerprint
    expected = getattr(recorded, kind)
    if (expected == value) if expected else (recorded.id == resolved.reference):
        return None
    return f"its adapters were trained for base model '{recorded.id}', not '{resolved.reference}'"
