"""Read a LoRA adapter directory into per-layer (a, b, scale) updates.

Two layouts are understood, both with `adapter_config.json`:
- mlx-lm's (`lora_parameters: {rank, scale, ...}`, `num_layers`), weights in
  `adapter_model.safetensors` (the locomlx standard name) or `adapters.safetensors`
  (mlx-lm's name), tensors `model.layers.N.<module>.lora_a` (in, r) / `lora_b` (r, out);
- Hugging Face PEFT's (`peft_type: LORA`, `r`, `lora_alpha`), tensors
  `base_model.model.<module>.lora_A.weight` (r, in) / `lora_B.weight` (out, r).
Only safetensors are read: pickled `.bin` adapters can run code on load.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from locomlx.errors import LocomlxError

import mlx.core as mx

WEIGHT_FILES = ("adapter_model.safetensors", "adapters.safetensors")


@dataclass
class AdapterFile:
    """An adapter as read from disk: module path -> (a, b) in mlx-lm orientation, one scale."""

    name: str
    path: Path
    scale: float
    layers: dict[str, tuple[mx.array, mx.array]] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def ranks(self) -> set[int]:
        return {a.shape[1] for a, _ in self.layers.values()}

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes + b.nbytes for a, b in self.layers.values())


def _read_config(path: Path) -> dict:
    config_path = path / "adapter_config.json"
    if not config_path.is_file():
        raise LocomlxError(f"{path} has no adapter_config.json; it is not a LoRA adapter directory.")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LocomlxError(f"{config_path} is not valid JSON ({exc}); fix or regenerate the file.") from exc


def weights_file(path: Path) -> Path:
    """The adapter's weights: adapter_model.safetensors, else mlx-lm's adapters.safetensors; pickles refused."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
    hint = f" Found {', '.join(pickles)}: pickled weights are refused; convert them to safetensors." if pickles else ""
    raise LocomlxError(f"{path} has no {WEIGHT_FILES[0]} (or {WEIGHT_FILES[1]}).{hint}")


MAX_SCALE = 1000.0  # mlx-lm's default is 20; PEFT's alpha / r is rarely above 16


def _number(value, config_path: Path, field: str, positive: bool = True) -> float:
    """A config number, refused with the field's name when it is not a finite (positive) number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (positive and value <= 0):
        wanted = "a positive number" if positive else "a number"
        raise LocomlxError(f"{config_path}: '{field}' must be {wanted}, not {value!r}; fix the config.")
    return float(value)


def _checked_scale(scale: float, config_path: Path) -> float:
    if abs(scale) > MAX_SCALE:
        raise LocomlxError(f"{config_path}: the LoRA scale is {scale:g}, beyond {MAX_SCALE:g}: the update would "
                           "swamp the base model; the config is wrong.")
    return scale


def _config_scale(config: dict, config_path: Path) -> tuple[str, float]:
    if not isinstance(config, dict):
        raise LocomlxError(f"{config_path}: must be a JSON object, not {type(config).__name__}.")
    if "lora_parameters" in config:
        fine_tune_type = config.get("fine_tune_type", "lora")
        if fine_tune_type != "lora":
            raise LocomlxError(f"{config_path}: fine_tune_type '{fine_tune_type}' is not supported; "
                               "only 'lora' adapters can stay resident.")
        params = config["lora_parameters"]
        if not isinstance(params, dict):
            raise LocomlxError(f"{config_path}: 'lora_parameters' must be an object with rank and scale.")
        if "scale" not in params:
            raise LocomlxError(f"{config_path}: lora_parameters has no 'scale' (mlx-lm uses scale, not alpha); add it.")
        if "rank" in params:
            _number(params["rank"], config_path, "lora_parameters.rank")
        scale = _number(params["scale"], config_path, "lora_parameters.scale", positive=False)
        return "mlx", _checked_scale(scale, config_path)
    if str(config.get("peft_type", "")).upper() == "LORA":
        rank = _number(config.get("r", 8), config_path, "r")
        alpha = _number(config.get("lora_alpha", config.get("r", 8)), config_path, "lora_alpha", positive=False)
        return "peft", _checked_scale(alpha / (math.sqrt(rank) if config.get("use_rslora") else rank), config_path)
    raise LocomlxError(
        f"{config_path}: neither an mlx-lm LoRA config (lora_parameters) nor a PEFT LoRA config (peft_type: LORA)."
    )


# mlx-lm keeps a multimodal model's language model at `language_model.model.`, transformers (and so PEFT)
# at `model.language_model.`; every other dense family has the same module paths in both.
_MLX_WRAPPED, _HF_WRAPPED = "language_model.model.", "model.language_model."


def peft_module(module: str) -> str:
    """The PEFT tensor prefix of an mlx-lm module path."""
    if module.startswith(_MLX_WRAPPED):
        module = _HF_WRAPPED + module[len(_MLX_WRAPPED):]
    return f"base_model.model.{module}"


def mlx_module(peft_name: str) -> str:
    """The mlx-lm module path of a PEFT tensor prefix (inverse of `peft_module`)."""
    module = peft_name.removeprefix("base_model.model.")
    return _MLX_WRAPPED + module[len(_HF_WRAPPED):] if module.startswith(_HF_WRAPPED) else module


def _pair_tensors(tensors: dict[str, mx.array], layout: str,
                  weights_path: Path) -> dict[str, tuple[mx.array, mx.array]]:
    suffix_a, suffix_b = (".lora_a", ".lora_b") if layout == "mlx" else (".lora_A.weight", ".lora_B.weight")
    layers = {}
    for key, a in tensors.items():
        if not key.endswith(suffix_a):
            continue
        module = key[: -len(suffix_a)]
        b = tensors.get(module + suffix_b)
        if b is None:
            raise LocomlxError(f"{weights_path}: '{key}' has no matching '{module + suffix_b}'; "
                               "the file is incomplete.")
        if layout == "peft":
            a, b = a.T, b.T
            module = mlx_module(module)
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise LocomlxError(f"{weights_path}: '{module}' has inconsistent LoRA shapes {a.shape} and {b.shape}.")
        if a.shape[1] == 0:
            raise LocomlxError(f"{weights_path}: '{module}' has rank 0: it changes nothing; the file is broken.")
        for tensor in (a, b):
            if not mx.issubdtype(tensor.dtype, mx.floating):
                raise LocomlxError(f"{weights_path}: '{module}' holds {tensor.dtype} weights; LoRA weights are "
                                   "floating point (float32, float16 or bfloat16).")
            if not mx.all(mx.isfinite(tensor)).item():
                raise LocomlxError(f"{weights_path}: '{module}' holds NaN or infinite weights; the training "
                                   "diverged or the file is corrupt. Retrain with a lower learning rate.")
        layers[module] = (a, b)
    if not layers:
        raise LocomlxError(f"{weights_path} holds no LoRA tensors (expected names ending in {suffix_a}).")
    return layers


def read_adapter(path: str | Path, name: str | None = None) -> AdapterFile:
    """Read and sanity-check an adapter directory; nothing is attached to any model here."""
    path = Path(path)
    if not path.is_dir():
        raise LocomlxError(f"Adapter directory '{path}' does not exist.")
    config = _read_config(path)
    layout, scale = _config_scale(config, path / "adapter_config.json")
    weights_path = weights_file(path)
    try:
        tensors = mx.load(str(weights_path))
    except Exception as exc:
        raise LocomlxError(f"Cannot read {weights_path}: {exc}. The file is corrupt; "
                           "retrain or re-download the adapter.") from exc
    layers = _pair_tensors(tensors, layout, weights_path)
    return AdapterFile(name or path.name, path, scale, layers, config)
