"""The engine: one base model loaded once, any number of LoRA adapters resident beside it.

    engine = Engine.load("smollm2-135m")
    engine.load_adapter("adapters/sentiment")
    engine.generate([{"role": "user", "content": "..."}], adapter="sentiment")

Selecting an adapter per call is one attribute write (see engine/lora.py);
loading one from disk reads its safetensors and attaches (a, b) to the target
layers, wrapping a layer the first time any adapter targets it. A batch may
give every conversation its own adapter (engine/mixed.py), and an adapter may
be a weighted composition of resident ones, `a+b` or `a:0.7+b:0.3` (engine/compose.py).
"""

from __future__ import annotations

import resource
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

from locomlx.adapters.format import AdapterFile, read_adapter
from locomlx.engine.batching import DEFAULT_BATCH, generate_rows
from locomlx.engine.compose import compose_layer, composition_name, parse_composition
from locomlx.engine.decode import Decoder, DecodeStats, decode
from locomlx.engine.lora import AdapterSelection, LoRAWeights, MultiLoRALinear
from locomlx.engine.mixed import MixedModel, plan_mix
from locomlx.engine.prefix import prefill_prompts
from locomlx.errors import LocomlxError
from locomlx.models.cpu_kernels import attention_installed
from locomlx.models.load import BaseModel, compute_stream, load_base
from locomlx.models.resolve import resolve_model
from locomlx.prompt import fit_prompt

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten


@dataclass
class ResidentAdapter:
    """An adapter held in memory next to the base model."""

    name: str
    path: str
    ranks: list[int]
    scale: float
    modules: list[str]
    nbytes: int
    load_seconds: float
    parts: list[tuple[str, float]] | None = None  # a composition's (adapter, weight) pairs


@dataclass
class Generation:
    """One answer and how it was produced."""

    text: str
    adapter: str | None
    prompt_tokens: int
    generation_tokens: int
    prompt_tps: float
    generation_tps: float
    finish_reason: str | None
    truncated: bool
    switch_seconds: float
    peak_memory_mb: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class GenerationChunk:
    """Text decoded since the previous chunk; the last chunk of a stream also carries the whole `generation`."""

    text: str
    generation: Generation | None = None


@dataclass
class BatchGeneration:
    """Answers to many prompts generated together, with the batch's throughput."""

    texts: list[str]
    adapter: str | None
    prompt_tokens: int
    generation_tokens: int
    seconds: float
    truncated: int
    adapters: list[str | None] | None = None  # each text's adapter (a mixed batch)
    mean_logprobs: list[float] | None = None  # each text's mean token log-probability (-inf when empty)

    @property
    def tokens_per_second(self) -> float:
        return self.generation_tokens / self.seconds if self.seconds else 0.0


@dataclass
class EngineTimings:
    base_load_seconds: float = 0.0
    last_switch_seconds: float = 0.0
    switches: int = 0


def peak_memory_mb() -> float:
    """Peak resident memory of this process (what the student's laptop actually pays)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


class Engine:
    def __init__(self, base: BaseModel):
        self.base = base
        self.selection = AdapterSelection()
        self.adapters: dict[str, ResidentAdapter] = {}
        self.timings = EngineTimings()
        self._adapter_dtype = mx.bfloat16 if base.compute_dtype == "bfloat16" else mx.float32
        self.decoder = (Decoder(base.model) if attention_installed(base.model) and base.compute_dtype == "float32"
                        else None)

    @classmethod
    def load(cls, base_model: str | None = None, compute_dtype: str = "auto", on_convert=None) -> "Engine":
        start = time.perf_counter()
        engine = cls(load_base(resolve_model(base_model, on_convert=on_convert), compute_dtype))
        engine.timings.base_load_seconds = time.perf_counter() - start
        return engine

    @property
    def model(self) -> nn.Module:
        return self.base.model

    @property
    def tokenizer(self):
        return self.base.tokenizer

    # --- adapters -----------------------------------------------------------------------

    def _target_layer(self, modules: dict, adapter: AdapterFile, module_path: str, a: mx.array,
                      b: mx.array) -> nn.Module:
        layer = modules.get(module_path)
        where = f"adapter '{adapter.name}' ({adapter.path})"
        if layer is None:
            raise LocomlxError(
                f"{where} targets '{module_path}', which this base model ({self.base.resolved.reference}) "
                "does not have; it was trained for a different base model."
            )
        base_layer = layer.base if isinstance(layer, MultiLoRALinear) else layer
        if not isinstance(base_layer, (nn.Linear, nn.QuantizedLinear)):
            raise LocomlxError(f"{where} targets '{module_path}', a {type(base_layer).__name__}; "
                               "only linear layers are supported.")
        probe = layer if isinstance(layer, MultiLoRALinear) else MultiLoRALinear(layer, self.selection)
        if a.shape[0] != probe.input_dims or b.shape[1] != probe.output_dims:
            raise LocomlxError(
                f"{where}: '{module_path}' has LoRA shapes {tuple(a.shape)} x {tuple(b.shape)} but the base layer maps "
                f"{probe.input_dims} -> {probe.output_dims}; it was trained for a different base model."
            )
        return probe

    def load_adapter(self, path, name: str | None = None) -> ResidentAdapter:
        """Read an adapter directory and make it resident under `name` (default: directory name).

        Everything is validated before anything is attached, so a bad adapter leaves the engine unchanged.
        """
        start = time.perf_counter()
        adapter = read_adapter(path, name)
        if adapter.name in self.adapters:
            raise LocomlxError(f"An adapter named '{adapter.name}' is already loaded; "
                               "unload it first or pick another name.")
        modules = dict(self.model.named_modules())
        targets = {m: self._target_layer(modules, adapter, m, a, b) for m, (a, b) in adapter.layers.items()}
        new_wrappers = [(m, layer) for m, layer in targets.items() if modules[m] is not layer]
        if new_wrappers:
            self.model.update_modules(tree_unflatten(new_wrappers))
        dtype = self._adapter_dtype
        attached = []
        for module_path, (a, b) in adapter.layers.items():
            weights = LoRAWeights(a.astype(dtype), b.astype(dtype), adapter.scale)
            targets[module_path].resident[adapter.name] = weights
            attached += [weights.a, weights.b]
        mx.eval(attached)
        self._forget_banks()
        seconds = time.perf_counter() - start
        resident = ResidentAdapter(
            adapter.name, str(adapter.path), sorted(adapter.ranks), adapter.scale, sorted(adapter.layers),
            adapter.nbytes, seconds,
        )
        self.adapters[adapter.name] = resident
        return resident

    def _lora_layers(self) -> list[MultiLoRALinear]:
        return [layer for _, layer in self.model.named_modules() if isinstance(layer, MultiLoRALinear)]

    def _forget_banks(self) -> None:
        """Drop everything built from the resident adapters' weights (they changed)."""
        for layer in self._lora_layers():
            layer.forget_banks()
        if self.decoder:
            self.decoder.forget()

    def unload_adapter(self, name: str) -> None:
        """Drop `name` from memory, and with it every composition that uses it."""
        if name not in self.adapters:
            raise LocomlxError(f"No adapter named '{name}' is loaded (loaded: {', '.join(self.adapters) or 'none'}).")
        for other in [a.name for a in self.adapters.values() if a.parts and name in dict(a.parts)]:
            self.unload_adapter(other)
        for layer in self._lora_layers():
            layer.resident.pop(name, None)
        self._forget_banks()
        del self.adapters[name]
        if self.selection.active == name:
            self.selection.active = None

    def compose(self, spec: str) -> str:
        """Make the composition `spec` (`a+b`, `a:0.7+b:0.3`) of resident adapters resident; returns its name.

        A plain adapter name is returned as is. Building takes one concatenation per layer, once.
        """
        parts = parse_composition(spec)
        if parts is None:
            return spec
        name = composition_name(parts)
        if name in self.adapters:
            return name
        missing = [part for part, _ in parts if part not in self.adapters]
        if missing:
            raise LocomlxError(f"Composition '{spec}' needs {', '.join(missing)} loaded first "
                               f"(loaded: {', '.join(self.adapters) or 'none'}).")
        start = time.perf_counter()
        modules, ranks, nbytes = [], set(), 0
        for module_path, layer in self.model.named_modules():
            if not isinstance(layer, MultiLoRALinear):
                continue
            present = [(layer.resident[part], weight) for part, weight in parts if part in layer.resident]
            if present:
                lora = compose_layer(present)
                mx.eval(lora.a, lora.b)
                layer.resident[name] = lora
                modules.append(module_path)
                ranks.add(lora.a.shape[1])
                nbytes += lora.a.nbytes + lora.b.nbytes
        self.adapters[name] = ResidentAdapter(name, spec, sorted(ranks), 1.0, sorted(modules), nbytes,
                                              time.perf_counter() - start, parts)
        return name

    def _resident_name(self, name: str | None) -> str | None:
        """The resident adapter `name` refers to (a composition is built the first time); an error if none."""
        if name is None:
            return None
        name = self.compose(name)
        if name not in self.adapters:
            raise LocomlxError(f"Adapter '{name}' is not loaded (loaded: {', '.join(self.adapters) or 'none'}).")
        return name

    def select(self, name: str | None) -> float:
        """Make `name` (or None for the plain base) the adapter of the next forward pass; returns seconds taken."""
        name = self._resident_name(name)
        start = time.perf_counter()
        self.selection.active = name
        seconds = time.perf_counter() - start
        self.timings.last_switch_seconds = seconds
        self.timings.switches += 1
        return seconds

    # --- generation ---------------------------------------------------------------------

    def _fit(self, messages: list[dict], max_tokens: int) -> tuple[list[int], bool]:
        if max_tokens < 1:
            raise LocomlxError("max_tokens must be at least 1.")
        budget = self.base.context_length - max_tokens
        if budget < 8:
            raise LocomlxError(f"max_tokens={max_tokens} leaves no room for a prompt in a "
                               f"{self.base.context_length}-token context.")
        return fit_prompt(self.tokenizer, messages, budget)

    def generate_batch(self, conversations: list[list[dict]], adapter: str | None = None, max_tokens: int = 256,
                       batch_size: int = DEFAULT_BATCH, temperature: float = 0.0, seed: int | None = None,
                       adapters: list[str | None] | None = None, logprobs: bool = False,
                       on_progress: Callable[[int, int], None] | None = None) -> BatchGeneration:
        """Answers to many conversations, `batch_size` at a time with continuous batching (engine/batching.py).

        Every conversation uses `adapter`, or with `adapters` each its own (None = base): a mixed batch,
        still one forward pass per step. Greedy by default; with a temperature, sampled (reproducibly when
        a seed is given). `logprobs` adds each answer's mean token log-probability; `on_progress(done, total)`
        is called as answers finish. In a one-adapter batch the prompts' shared prefix (system turn,
        instruction) is prefilled once; in any batch, so is each prompt given to several rows with one adapter
        (engine/prefix.py).
        """
        from mlx_lm.models.cache import make_prompt_cache
        from mlx_lm.sample_utils import make_sampler

        if adapters is not None and len(adapters) != len(conversations):
            raise LocomlxError(f"{len(adapters)} adapters given for {len(conversations)} conversations; give one each.")
        row_adapters = [self._resident_name(a) for a in (adapters or [adapter] * len(conversations))]
        fitted = [self._fit(messages, max_tokens) for messages in conversations]
        prompts = [tokens for tokens, _ in fitted]
        mixed = len(set(row_adapters)) > 1
        single = None if mixed else (row_adapters[0] if row_adapters else self._resident_name(adapter))
        if mixed:
            widths = {name: max(self.adapters[name].ranks) for name in row_adapters if name is not None}
            mix, rows = plan_mix(row_adapters, widths, self._adapter_dtype)
            model = MixedModel(self.model, self.selection)
        else:
            self.select(single)
            model = self.model
        if seed is not None:
            mx.random.seed(seed)
        start = time.perf_counter()
        previous = self.selection.active
        try:
            if mixed:
                self.selection.mix, self.selection.active = mix, None
                with mx.stream(compute_stream()):
                    prompts, caches = prefill_prompts(model, prompts, row_adapters,
                                                      lambda i: make_prompt_cache(self.model) + [rows[i]])
            else:  # one adapter for all rows: their shared prefix is the same keys and values for each
                with mx.stream(compute_stream()):
                    prompts, caches = prefill_prompts(model, prompts)
            generated = generate_rows(model, prompts, caches, max_tokens=max_tokens, batch_size=batch_size,
                                      sampler=make_sampler(temp=temperature), stop_tokens=self.tokenizer.eos_token_ids,
                                      stream=compute_stream(), logprobs=logprobs, on_row_done=on_progress)
        finally:
            if mixed:
                self.selection.mix = None
                self.selection.active = previous
        means = [sum(lp) / len(lp) if lp else float("-inf") for lp in generated.logprobs] if logprobs else None
        return BatchGeneration([self.tokenizer.decode(ids) for ids in generated.token_ids], single,
                               sum(len(t) for t, _ in fitted), sum(len(ids) for ids in generated.token_ids),
                               time.perf_counter() - start, sum(cut for _, cut in fitted), row_adapters, means)

    def stream_generate(
        self,
        messages: list[dict],
        adapter: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Iterator[GenerationChunk]:
        """Answer `messages` with `adapter` (None = base), yielding text as it is decoded; greedy when temperature
        is 0. Stops at EOS or `max_tokens`; the last chunk carries the whole `Generation`."""
        from mlx_lm.sample_utils import make_sampler

        tokens, truncated = self._fit(messages, max_tokens)
        if truncated:
            warnings.warn(f"locomlx: the prompt was cut to {len(tokens)} tokens to fit the model's context.",
                          stacklevel=2)
        switch = self.select(adapter)
        if seed is not None:
            mx.random.seed(seed)
        sampler = make_sampler(temp=temperature, top_p=top_p)
        detokenizer = self.tokenizer.detokenizer
        detokenizer.reset()
        pieces: list[str] = []
        stats = DecodeStats()
        with mx.stream(compute_stream()):
            for token in decode(self.model, tokens, max_tokens=max_tokens, sampler=sampler,
                                stop_tokens=self.tokenizer.eos_token_ids, decoder=self.decoder,
                                step_key=self.selection.active, stats=stats):
                detokenizer.add_token(token)
                piece = detokenizer.last_segment  # the text completed since the last read (reading consumes it)
                if piece:
                    pieces.append(piece)
                    yield GenerationChunk(piece)
        detokenizer.finalize()
        piece = detokenizer.last_segment
        pieces.append(piece)
        yield GenerationChunk(piece, Generation(
            text="".join(pieces),
            adapter=adapter,
            prompt_tokens=len(tokens),
            generation_tokens=stats.generation_tokens,
            prompt_tps=stats.prompt_tps,
            generation_tps=stats.generation_tps,
            finish_reason=stats.finish_reason,
            truncated=truncated,
            switch_seconds=switch,
            peak_memory_mb=peak_memory_mb(),
        ))

    def generate(self, messages: list[dict], adapter: str | None = None, max_tokens: int = 256,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> Generation:
        """The whole answer at once (see `stream_generate`)."""
        for chunk in self.stream_generate(messages, adapter, max_tokens, temperature, top_p, seed):
            pass
        return chunk.generation
