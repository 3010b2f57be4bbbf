"""The adapter registry (`registry.yaml` in the adapter library): what the router, chat and eval import.

    from locomlx.registry import load_registry, active_adapters
    registry = load_registry(library_dir())
    active_adapters(registry)          # {"sentiment": "sentiment-rt", ...}
"""

from locomlx.registry.history import record_scores
from locomlx.registry.schema import (
                                     AdapterEntry,
                                     BaseModelInfo,
                                     HistoryRecord,
                                     Registry,
                                     RouterHints,
                                     Scores,
                                     active_adapters,
                                     registry_hash,
)
from locomlx.registry.store import load_registry

__all__ = ["AdapterEntry", "BaseModelInfo", "HistoryRecord", "Registry", "RouterHints", "Scores", "active_adapters",
           "load_registry", "record_scores", "registry_hash"]
