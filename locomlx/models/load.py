"""Load a resolved base model into memory in the dtype it should compute in.

On the CPU device MLX's 4-bit `quantized_matmul`, bf16 and f16 kernels are
single-threaded and never use BLAS, so dequantized float32 weights run prefill
~20x faster (with the CBLAS that locomlx/blas.py preloads). On Metal and CUDA
the 4-bit weights are kept: there they are both smaller and faster.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from locomlx.errors import LocomlxError
from locomlx.models import cpu_kernels
from locomlx.models.anatomy import text_config
from locomlx.models.kernels import load_kernel
from locomlx.models.packed import pack_layers
from locomlx.models.resolve import ResolvedModel, resolve_model
from locomlx.prompt import PLAIN_ENDS, has_chat_template

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_unflatten

COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "quantized")
# Dequantizing to float32 is refused by `auto` above this share of RAM.
_MAX_FLOAT32_RAM_SHARE = 0.5


@dataclass
class BaseModel:
    """A loaded base model with its tokenizer and the facts the engine reports."""

    model: nn.Module
    tokenizer: object  # mlx_lm TokenizerWrapper
    config: dict
    resolved: ResolvedModel
    compute_dtype: str

    @property
    def text_config(self) -> dict:
        """The language model's settings (a multimodal wrapper nests them in `text_config`)."""
        return text_config(self.config)

    @property
    def context_length(self) -> int:
        return int(self.text_config.get("max_position_embeddings", 2048))


def compute_stream() -> mx.Stream:
    """The one stream every model computation runs on: the device's default stream.

    MLX runs each stream on its own thread, and CPU BLAS libraries keep a thread
    pool per calling thread. mlx-lm generates on a stream of its own, so with
    prefill, training or evaluation on the default stream the process would have
    two pools fighting over the cores, and decoding would stay slower afterwards.
    """
    return mx.default_stream(mx.default_device())


def device_kind() -> str:
    """'gpu' on Metal/CUDA, else 'cpu'."""
    return "gpu" if mx.default_device() == mx.gpu else "cpu"


def _total_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def _float32_bytes(model: nn.Module) -> int:
    total = 0
    for _, module in model.named_modules():
        if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            total += module.weight.shape[0] * module.weight.shape[1] * (32 // module.bits) * 4
    for _, p in tree_flatten(model.parameters()):
        if p.dtype not in (mx.uint32,):
            total += p.size * 4
    return total


def choose_compute_dtype(requested: str, model: nn.Module) -> str:
    if requested not in COMPUTE_DTYPES:
        raise LocomlxError(f"Unknown compute dtype '{requested}'; choose one of {', '.join(COMPUTE_DTYPES)}.")
    if requested != "auto":
        return requested
    if device_kind() == "gpu":
        return "quantized"
    ram = _total_ram()
    if ram and _float32_bytes(model) > _MAX_FLOAT32_RAM_SHARE * ram:
        warnings.warn(
            "locomlx: the model is too large to dequantize to float32 in RAM; computing with quantized weights "
            "(slow on CPU). Use a smaller model or pass --compute-dtype bfloat16.",
            RuntimeWarning,
            stacklevel=2,
        )
        return "quantized"
    return "float32"


def _dequantized(module: nn.Module, dtype: mx.Dtype) -> nn.Module:
    # Dequantize in float32: with float16 scales MLX would round every weight to float16 first.
    biases = module.get("biases")  # none in the mxfp4 / nvfp4 modes
    weight = mx.dequantize(module.weight, module.scales.astype(mx.float32),
                           None if biases is None else biases.astype(mx.float32),
                           group_size=module.group_size, bits=module.bits, mode=module.mode).astype(dtype)
    if isinstance(module, nn.QuantizedEmbedding):
        plain = nn.Embedding(weight.shape[0], weight.shape[1])
        plain.weight = weight
        return plain
    plain = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in module)
    plain.weight = weight
    if "bias" in module:
        plain.bias = module.bias.astype(dtype)
    return plain


def cast_model(model: nn.Module, compute_dtype: str) -> None:
    """Dequantize and cast in place to `compute_dtype` (no-op for 'quantized'); in float32 on a CPU with the
    qgemv kernel built, the layers keep their packed weights for decoding."""
    if compute_dtype == "quantized":
        return
    dtype = {"float32": mx.float32, "bfloat16": mx.bfloat16}[compute_dtype]
    quantized = {name: m for name, m in model.named_modules()
                 if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))}
    if quantized:
        model.update_modules(tree_unflatten([(name, _dequantized(m, dtype)) for name, m in quantized.items()]))
    model.update(tree_map(lambda p: p.astype(dtype) if mx.issubdtype(p.dtype, mx.floating) else p, model.parameters()))
    mx.eval(model.parameters())
    kernel = load_kernel() if dtype == mx.float32 and mx.default_device() == mx.cpu else None
    if kernel is not None and quantized:
        pack_layers(model, quantized, kernel)  # decoding reads the packed weights (locomlx/models/packed.py)


def load_tokenizer_only(reference: str | None):
    """The base model's tokenizer without loading its weights (for data checks)."""
    from mlx_lm.utils import load_tokenizer

    resolved = resolve_model(reference)
    return load_tokenizer(resolved.path)


def _stop_plain_answers(tokenizer) -> None:
    """A pretrained model (no chat template) answers in the plain layout and goes on to write the next
    question on the next line; its answer ends with its line, so a newline token stops generation like an
    end-of-sequence (locomlx/prompt.py)."""
    if has_chat_template(tokenizer):
        return
    newlines = [tokenizer.encode(end, add_special_tokens=False) for end in PLAIN_ENDS]
    tokenizer.eos_token_ids = set(tokenizer.eos_token_ids) | {ids[0] for ids in newlines if len(ids) == 1}


def load_base(resolved: ResolvedModel, compute_dtype: str = "auto") -> BaseModel:
    from mlx_lm.utils import load_model, load_tokenizer

    try:
        model, config = load_model(resolved.path)
    except ValueError as exc:
        raise LocomlxError(
            f"mlx-lm cannot load '{resolved.reference}': {exc}. If it is not an MLX model, convert it with "
            f"`mlx_lm.convert --hf-path <repo> -q` and pass the output directory."
        ) from exc
    except FileNotFoundError as exc:
        raise LocomlxError(f"Model directory for '{resolved.reference}' is incomplete: {exc}") from exc
    tokenizer = load_tokenizer(resolved.path, eos_token_ids=text_config(config).get("eos_token_id"))
    _stop_plain_answers(tokenizer)
    chosen = choose_compute_dtype(compute_dtype, model)
    cast_model(model, chosen)
    if device_kind() == "cpu":
        cpu_kernels.install(model)
        cpu_kernels.install_in_generation()
    model.eval()
    return BaseModel(model, tokenizer, config, resolved, chosen)
