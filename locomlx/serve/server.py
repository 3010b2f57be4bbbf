"""Start a server: the base model and every adapter of the library loaded once, the router warmed, uvicorn on
a port. `load_state` is what the tests and the benchmark start too."""

from __future__ import annotations

import ipaddress
import socket
import threading
from pathlib import Path
from typing import Callable

from locomlx.adapters.library import list_adapters
from locomlx.engine.engine import Engine
from locomlx.registry import load_registry
from locomlx.serve.app import ServeState, create_app
from locomlx.serve.scheduler import Scheduler
from locomlx.session import AUTO, AdapterChooser


def load_state(base_model: str | None, library: Path, router_name: str | None = None, api_key: str | None = None,
               max_batch: int = 32, max_queue: int = 128, compute_dtype: str = "auto", cross_request: bool = True,
               on_convert=None, on_message: Callable[[str], None] = lambda _: None) -> ServeState:
    """Load the base, make every adapter of `library` resident (registered or not), and load the router by
    routing one question, so the first client waits for nothing."""
    engine = Engine.load(base_model, compute_dtype, on_convert=on_convert)
    on_message(f"base model {engine.base.resolved.reference} loaded in {engine.timings.base_load_seconds:.1f} s")
    registry = load_registry(library)
    names = list(dict.fromkeys([*registry.adapters, *list_adapters(library)]))
    for name in names:
        path = library / registry.adapters[name].path if name in registry.adapters else library / name
        engine.load_adapter(path, name)
    on_message(f"{len(names)} adapters resident: {', '.join(names) or 'none'}")
    chooser = AdapterChooser(engine, library, router_name)
    chooser.choose(AUTO, "warm up the router")
    return ServeState(Scheduler(chooser, max_batch, max_queue, cross_request), library, api_key)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str) -> int:
    """A port nothing listens on now (for --port 0: the URL printed must name the real port)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def run(state: ServeState, host: str, port: int, log_level: str = "warning") -> bool:
    """Serve until Ctrl-C: uvicorn answers HTTP on a thread of its own while this (main) thread decodes
    (see Scheduler.run). Returns False when the server could not start (e.g. the port is taken)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(state), host=host, port=port, log_level=log_level,
                                           timeout_graceful_shutdown=5))
    http = threading.Thread(target=server.run, name="locomlx-http", daemon=True)
    http.start()
    try:
        state.scheduler.run(until=lambda: not http.is_alive())
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        http.join(10)
    return server.started
