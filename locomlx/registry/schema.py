"""`registry.yaml`, version 2: the one place its format is defined, parsed, checked and written.

A registry names the library's base model and its adapters (several per
domain, at most one active), with each adapter's scores copied from its
`eval/results.json` and a history of scores per semester. Every field is in
the tables below (`BASE_FIELDS`, `ADAPTER_FIELDS`, ...); docs/registry.md
describes the same fields for people. Problems are reported with the YAML
line they come from, read off the node marks of `yaml.compose`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Callable

from locomlx.data.records import Problem
from locomlx.errors import LocomlxError
from locomlx.scoring.metrics import metric_names
from locomlx.scoring.results import SCHEMA as RESULTS_SCHEMA

import yaml

SCHEMA_VERSION = 2
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
SEMVER = r"\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?"
TERMS = ("spring", "summer", "fall")
SEMESTER = rf"\d{{4}}-(?:{'|'.join(TERMS)})"
ACADEMIC_YEAR = r"\d{4}-\d{2}"
SHA256 = r"[0-9a-f]{64}"
DATE = r"\d{4}-\d{2}-\d{2}"
HEADER = (
    "# locomlx adapter registry, schema version 2 (docs/registry.md).\n"
    "# locomlx commands rewrite this file in schema order; hand edits are welcome, but comments\n"
    "# are not kept. Check edits with: locomlx registry validate\n"
)


@dataclass(frozen=True)
class Field:
    """One documented field: its type, meaning and format; `fields`/`record` describe a nested mapping."""

    kind: type
    meaning: str
    required: bool = False
    pattern: str | None = None
    example: str = ""
    choices: tuple | Callable[[], tuple] = ()  # a callable is asked at check time (registries that grow)
    items: type | None = None  # element type of a list
    fields: dict | None = None
    record: type | None = None

    def problem(self, value) -> str | None:
        """What is wrong with `value` (the fix included), or None."""
        if not isinstance(value, self.kind) or (isinstance(value, bool) and self.kind is not bool):
            return f"must be {_KIND_NAMES[self.kind]}, not {_shown(value)}{_example(self)}"
        if self.items and not all(isinstance(item, self.items) for item in value):
            return f"must be a list of {_KIND_NAMES[self.items]}s{_example(self)}"
        if self.pattern and not re.fullmatch(self.pattern, value):
            return f"'{value}' has the wrong format{_example(self)}"
        choices = self.choices() if callable(self.choices) else self.choices
        if choices and value not in choices:
            return f"{_shown(value)} is not one of {', '.join(map(str, choices))}"
        return None


_KIND_NAMES = {str: "a string", int: "a whole number", bool: "true or false", list: "a list", dict: "a mapping",
               (int, float): "a number"}


def _shown(value) -> str:
    return "nothing (null)" if value is None else f"{type(value).__name__} {value!r}"


def _example(spec: Field) -> str:
    return f" (e.g. {spec.example})" if spec.example else ""


def _from_results(name: str) -> Field:
    kind, meaning = RESULTS_SCHEMA[name]
    return Field((int, float) if kind == (int, float) else kind, f"{meaning} (from eval/results.json)", required=True)


@dataclass
class BaseModelInfo:
    id: str
    quantization: str
    academic_year: str
    file_sha256: str | None = None
    revision: str | None = None


@dataclass
class Scores:
    adapter_score: float
    base_model_score: float
    improvement: float
    ood_degradation: float
    p_value: float
    significant: bool

    @classmethod
    def from_results(cls, results: dict) -> "Scores":
        return cls(**{name: results[name] for name in SCORE_FIELDS})

    def differences(self, results: dict) -> list[tuple[str, float, float]]:
        """(field, recorded, in results) for each score that results.json has otherwise."""
        return [(name, getattr(self, name), results[name]) for name in SCORE_FIELDS
                if not _same_number(getattr(self, name), results[name])]


def _same_number(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@dataclass
class RouterHints:
    keywords: list[str] = field(default_factory=list)
    description: str = ""


@dataclass
class AdapterEntry:
    name: str
    domain: str
    version: str
    path: str | None = None
    source: str | None = None
    description: str = ""
    authors: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    semester: str | None = None
    active: bool = False
    metric: str | None = None
    benchmark: str | None = None
    sha256: str | None = None
    scores: Scores | None = None
    router: RouterHints = field(default_factory=RouterHints)

    @property
    def installed(self) -> bool:
        return self.path is not None

    @property
    def router_keywords(self) -> list[str]:
        return self.router.keywords


@dataclass
class HistoryRecord:
    semester: str
    adapter: str
    domain: str
    adapter_score: float
    base_model_score: float
    improvement: float
    ood_degradation: float
    recorded: str
    version: str | None = None  # the adapter version these scores belong to
    n_examples: int | None = None  # benchmark examples scored
    ood_limit: int | None = None  # examples scored per out-of-domain benchmark (None = all)


@dataclass
class Registry:
    base_model: BaseModelInfo | None = None
    adapters: dict[str, AdapterEntry] = field(default_factory=dict)
    history: list[HistoryRecord] = field(default_factory=list)
    version: int = SCHEMA_VERSION
    # YAML line of each key path, e.g. ("adapters", "sentiment-rt", "domain") -> 12; empty when not read from a file.
    lines: dict[tuple, int] = field(default_factory=dict, repr=False, compare=False)

    def entry(self, name: str) -> AdapterEntry:
        """The adapter called `name`, or an error that lists the registered ones."""
        if name not in self.adapters:
            known = ", ".join(self.adapters) or "none"
            raise LocomlxError(f"No adapter '{name}' in the registry (registered: {known}).")
        return self.adapters[name]

    def line(self, *keys) -> int | None:
        """Line of the deepest key along `keys` that the file has."""
        return _line_of(self.lines, keys)


def _line_of(lines: dict[tuple, int], keys: tuple) -> int | None:
    for end in range(len(keys), 0, -1):
        if keys[:end] in lines:
            return lines[keys[:end]]
    return None


BASE_FIELDS = {
    "id": Field(str, "base-model reference for the resolver: built-in name, .gguf, mlx-lm folder or Hugging Face id",
                required=True, example="smollm2-135m"),
    "quantization": Field(str, "the base weights as shipped", required=True, example="Q4_1"),
    "file_sha256": Field(str, "sha256 of the base weights file (the GGUF; for an mlx-lm folder, its *.safetensors "
                              "in name order); this or revision is required", pattern=SHA256, example="64 hex digits"),
    "revision": Field(str, "Hugging Face commit of a hub base model; this or file_sha256 is required"),
    "academic_year": Field(str, "the academic year the library serves", required=True, pattern=ACADEMIC_YEAR,
                           example="2026-27"),
}
SCORE_FIELDS = {name: _from_results(name) for name in
                ("adapter_score", "base_model_score", "improvement", "ood_degradation", "p_value", "significant")}
ROUTER_FIELDS = {
    "keywords": Field(list, "words a keyword router matches in a question", items=str, example="[review, movie]"),
    "description": Field(str, "one sentence on what the adapter is for, for routers that compare meaning"),
}
ADAPTER_FIELDS = {
    "domain": Field(str, "the task family; several adapters may share one", required=True, pattern=NAME,
                    example="sentiment"),
    "version": Field(str, "semantic version of the adapter", required=True, pattern=SEMVER, example="1.0.0"),
    "path": Field(str, "the adapter's folder in the library, the same as its name; absent until installed",
                  example="sentiment-rt"),
    "source": Field(str, "where it comes from: Hugging Face repo id or URL", example="cohort/sentiment-rt"),
    "description": Field(str, "what it does, in a sentence"),
    "authors": Field(list, "who made it", items=str, example="[Ada Lovelace]"),
    "tags": Field(list, "free labels", items=str, example="[english, classification]"),
    "semester": Field(str, "the semester it was made in; history records are filed under it", pattern=SEMESTER,
                      example="2026-fall"),
    "active": Field(bool, "whether it answers for its domain; at most one active per domain (locomlx promote)"),
    "metric": Field(str, "the metric its benchmark is scored with", choices=metric_names),
    "benchmark": Field(str, "its benchmark JSONL, relative to the library",
                       example="sentiment-rt/eval/benchmark.jsonl"),
    "sha256": Field(str, "sha256 of adapter_model.safetensors, recorded at install", pattern=SHA256,
                    example="64 hex digits"),
    "scores": Field(dict, "copied from eval/results.json by locomlx eval / registry refresh", fields=SCORE_FIELDS,
                    record=Scores),
    "router": Field(dict, "hints for the router", fields=ROUTER_FIELDS, record=RouterHints),
}
HISTORY_FIELDS = {
    "semester": Field(str, "semester of the adapter", required=True, pattern=SEMESTER, example="2026-fall"),
    "adapter": Field(str, "adapter name", required=True),
    "domain": Field(str, "its domain", required=True),
    **{name: SCORE_FIELDS[name] for name in ("adapter_score", "base_model_score", "improvement", "ood_degradation")},
    "recorded": Field(str, "date the scores were recorded", required=True, pattern=DATE, example="2026-11-22"),
    "version": Field(str, "the adapter version the scores belong to", pattern=SEMVER, example="1.0.0"),
    "n_examples": Field(int, "benchmark examples scored"),
    "ood_limit": Field(int, "examples scored per out-of-domain benchmark (absent: all)"),
}
TOP_FIELDS = {
    "version": Field(int, "schema version", required=True, choices=(SCHEMA_VERSION,)),
    "base_model": Field(dict, "the base model every adapter is trained for", required=True),
    "adapters": Field(dict, "adapters by unique name (write `adapters: {}` for none)", required=True),
    "history": Field(list, "scores archived per semester, appended when scores are recorded"),
}


MAX_DEPTH = 32  # a registry nests 4 levels deep; far deeper is a hostile or broken file


class _Loader(yaml.SafeLoader):
    """Safe YAML that keeps dates as text (`recorded: 2026-11-22` stays the string the schema expects), and
    refuses aliases and deep nesting: a few lines of nested aliases ("billion laughs") expand to gigabytes,
    and deep nesting exhausts the stack."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a registry; write the value out in full",
                self.peek_event().start_mark)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Document:
    """Collects problems for one file, each pinned to the YAML line of the key it is about."""

    def __init__(self, where: str, lines: dict[tuple, int]):
        self.where = where
        self.lines = lines
        self.problems: list[Problem] = []

    def error(self, keys: tuple, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(self.where, line or _line_of(self.lines, keys), message,
                                     field=".".join(map(str, keys)) or None))

    def check(self, data, spec: dict[str, Field], keys: tuple) -> bool:
        """Check a mapping against `spec`, nested mappings included; True when it has no problem."""
        if not isinstance(data, dict):
            self.error(keys, f"must be a mapping of field: value, not {_shown(data)}")
            return False
        ok = True
        for key, value in data.items():
            spec_field = spec.get(key)
            if spec_field is None:
                self.error(keys + (key,), f"unknown field; remove or rename it (allowed: {', '.join(spec)})")
                ok = False
                continue
            message = spec_field.problem(value)
            if message:
                self.error(keys + (key,), message)
                ok = False
            elif spec_field.fields:
                ok = self.check(value, spec_field.fields, keys + (key,)) and ok
        for key, spec_field in spec.items():
            if spec_field.required and key not in data:
                self.error(keys + (key,), f"is missing ({spec_field.meaning}); add it{_example(spec_field)}")
                ok = False
        return ok


def _index_lines(node, keys: tuple, lines: dict[tuple, int], doc: _Document) -> None:
    """Line of every key path below `node`; duplicate keys (which plain YAML loading hides) are errors."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = keys + (key_node.value if isinstance(key_node, yaml.ScalarNode) else "?",)
            line = key_node.start_mark.line + 1
            if path in lines:
                doc.error(path, f"appears twice (first at line {lines[path]}); keep one", line)
                for below in [k for k in lines if k[:len(path)] == path]:  # YAML keeps the last one
                    del lines[below]
            lines[path] = line
            _index_lines(value_node, path, lines, doc)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[keys + (index,)] = item.start_mark.line + 1
            _index_lines(item, keys + (index,), lines, doc)


def _build(record_type: type, spec: dict[str, Field], data: dict, **extra):
    values = {key: _build(spec[key].record, spec[key].fields, value) if spec[key].record else value
              for key, value in data.items()}
    return record_type(**values, **extra)


def _check_location(doc: _Document, keys: tuple, value: str) -> bool:
    """A path in the registry must stay inside the library."""
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\\" in value:
        doc.error(keys, f"'{value}' must be a relative path inside the library, with / separators and no '..'")
        return False
    return True


def _check_adapter(doc: _Document, name, raw) -> AdapterEntry | None:
    keys = ("adapters", name)
    if not isinstance(name, str) or not re.fullmatch(NAME, name):
        doc.error(keys, f"adapter name {_shown(name)} must be letters, digits, '.', '_' or '-' (a folder name)")
        return None
    ok = doc.check(raw, ADAPTER_FIELDS, keys)
    if not isinstance(raw, dict):
        return None
    if "path" not in raw and "source" not in raw:
        doc.error(keys + ("path",), "is missing: give path (installed) or source (where to install it from)")
        ok = False
    path, benchmark = raw.get("path"), raw.get("benchmark")
    if isinstance(path, str):
        if not _check_location(doc, keys + ("path",), path):
            ok = False
        elif PurePosixPath(path).parts != (name,):
            doc.error(keys + ("path",), f"must be the adapter's folder name '{name}' (the library finds adapters "
                                        "by name)")
            ok = False
    if isinstance(benchmark, str):
        ok = _check_location(doc, keys + ("benchmark",), benchmark) and ok
    if raw.get("active") is True and path is None:
        doc.error(keys + ("active",), "an adapter must be installed (have a path) to be active; install it first")
        ok = False
    return _build(AdapterEntry, ADAPTER_FIELDS, raw, name=name) if ok else None


def _check_actives(doc: _Document, adapters: dict[str, AdapterEntry]) -> None:
    first_active: dict[str, str] = {}
    for entry in adapters.values():
        if not entry.active:
            continue
        if entry.domain in first_active:
            doc.error(("adapters", entry.name, "active"),
                      f"'{first_active[entry.domain]}' is already active in domain '{entry.domain}'; at most one "
                      "adapter per domain may be active (use locomlx promote NAME)")
        else:
            first_active[entry.domain] = entry.name


def parse_registry(text: str, where: str = "registry.yaml") -> tuple[Registry, list[Problem]]:
    """Read registry text: the valid part as a Registry, and every problem found (empty when all is valid)."""
    loader = None
    try:
        loader = _Loader(text)  # reading starts here: a control character is refused already
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except ValueError as exc:  # an integer of more digits than Python converts (4300)
        reason = "an integer is too long to read (over 4300 digits)" if "digits" in str(exc) else str(exc)
        return Registry(), [Problem(where, None, f"not a valid value: {reason}; fix the value")]
    except yaml.YAMLError as exc:
        mark, context = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
        reason = getattr(exc, "problem", None) or exc
        if context is not None and getattr(exc, "context", None):
            reason = f"{exc.context} (line {context.line + 1}), {reason}"
        return Registry(), [Problem(where, mark.line + 1 if mark else None,
                                    f"not valid YAML: {reason}; fix the syntax")]
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[tuple, int] = {}
    doc = _Document(where, lines)
    _index_lines(node, (), lines, doc)
    registry = Registry(lines=lines)
    doc.check(data, TOP_FIELDS, ())
    if not isinstance(data, dict):
        return registry, doc.problems
    base = data.get("base_model")
    if isinstance(base, dict) and doc.check(base, BASE_FIELDS, ("base_model",)):
        registry.base_model = _build(BaseModelInfo, BASE_FIELDS, base)
        if not (registry.base_model.file_sha256 or registry.base_model.revision):
            doc.error(("base_model", "file_sha256"), "is missing: give file_sha256 (a file) or revision (a hub model)")
    adapters = data.get("adapters")
    for name, raw in (adapters.items() if isinstance(adapters, dict) else ()):
        entry = _check_adapter(doc, name, raw)
        if entry is not None:
            registry.adapters[name] = entry
    _check_actives(doc, registry.adapters)
    history = data.get("history")
    for index, raw in enumerate(history if isinstance(history, list) else ()):
        if doc.check(raw, HISTORY_FIELDS, ("history", index)):
            registry.history.append(_build(HistoryRecord, HISTORY_FIELDS, raw))
    return registry, doc.problems


def _plain(record, spec: dict[str, Field]) -> dict:
    """A record as its documented mapping, in schema order, leaving out unset and empty fields."""
    out = {}
    for key, spec_field in spec.items():
        value = getattr(record, key)
        if spec_field.record and value is not None:
            value = _plain(value, spec_field.fields)
        if value is not None and value != "" and value != [] and value != {}:
            out[key] = value
    return out


def entry_to_dict(entry: AdapterEntry) -> dict:
    return _plain(entry, ADAPTER_FIELDS)


def registry_to_dict(registry: Registry) -> dict:
    data: dict = {"version": registry.version}
    if registry.base_model:
        data["base_model"] = _plain(registry.base_model, BASE_FIELDS)
    data["adapters"] = {name: entry_to_dict(entry) for name, entry in registry.adapters.items()}
    if registry.history:
        data["history"] = [_plain(record, HISTORY_FIELDS) for record in registry.history]
    return data


class _Inline(dict):
    """A mapping written on one line ({a: 1, b: 2})."""


class _InlineList(list):
    """A list written on one line ([a, b])."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Inline, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True))
_Dumper.add_representer(_InlineList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def _inline(value):
    if isinstance(value, dict):
        return _Inline({key: _inline(item) for key, item in value.items()})
    if isinstance(value, list):
        return _InlineList(_inline(item) for item in value)
    return value


def format_registry(registry: Registry) -> str:
    """The registry as YAML, the same text for the same registry: header, schema key order, one line per
    list, score set and history record."""
    data = registry_to_dict(registry)
    data["adapters"] = {name: {key: _inline(value) for key, value in entry.items()}
                        for name, entry in data["adapters"].items()}
    if "history" in data:
        data["history"] = [_inline(record) for record in data["history"]]
    return HEADER + yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def version_key(version: str) -> tuple[int, int, int]:
    """'1.10.0' -> (1, 10, 0), for ordering versions (a pre-release suffix is ignored)."""
    major, minor, patch = re.match(r"(\d+)\.(\d+)\.(\d+)", version).groups()
    return int(major), int(minor), int(patch)


def registry_hash(registry: Registry) -> str:
    """Stable hash of what a trained router depends on: the active adapters' names, domains, paths and weights.

    A router routes to active adapters only and learns from their data, so installing, changing or removing
    an inactive one never makes it stale. Router hints are left out: the keyword router reads them afresh
    on every start.
    """
    view = {name: {"domain": e.domain, "path": e.path, "sha256": e.sha256}
            for name, e in registry.adapters.items() if e.active}
    return hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()


def active_adapters(registry: Registry) -> dict[str, str]:
    """Domain -> name of its active adapter (domains without one are left out)."""
    return {e.domain: e.name for e in registry.adapters.values() if e.active}


def semester_key(semester: str) -> tuple[int, int]:
    """Chronological sort key of '2026-fall'."""
    year, term = semester.split("-")
    return int(year), TERMS.index(term)


def current_semester(day: datetime.date | None = None) -> str:
    """January-May spring, June-July summer, August-December fall."""
    day = day or datetime.date.today()
    term = "spring" if day.month <= 5 else "summer" if day.month <= 7 else "fall"
    return f"{day.year}-{term}"


def current_academic_year(day: datetime.date | None = None) -> str:
    """An academic year starts in August: 2026-27 runs from August 2026 to July 2027."""
    day = day or datetime.date.today()
    start = day.year if day.month >= 8 else day.year - 1
    return f"{start}-{(start + 1) % 100:02d}"
