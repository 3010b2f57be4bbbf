"""`locomlx serve`: the whole routed library behind an OpenAI-compatible API and a web page (locomlx/serve)."""

from __future__ import annotations

from locomlx.cli.options import (
    adapters_dir_option,
    announce_conversion,
    base_model_option,
    compute_dtype_option,
    library_path,
    router_option,
)
from locomlx.errors import LocomlxError

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback should have an --api-key.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 = any free port).")
@base_model_option
@adapters_dir_option
@router_option
@click.option("--api-key", envvar="LOCOMLX_API_KEY", default=None, metavar="KEY",
              help="Require 'Authorization: Bearer KEY' on /v1 (env LOCOMLX_API_KEY).")
@click.option("--max-batch", default=32, show_default=True, type=click.IntRange(1),
              help="Most answers decoded together; requests beyond it wait for a free row.")
@click.option("--max-queue", default=128, show_default=True, type=click.IntRange(0),
              help="Most requests waiting beyond --max-batch; more get 429.")
@click.option("--no-cross-request-batching", "single", is_flag=True,
              help="Decode one request at a time (for comparison; scripts/bench_serve.py).")
@compute_dtype_option()
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]), help="uvicorn's log level.")
def serve(host, port, base_model, adapters_dir, router_name, api_key, max_batch, max_queue, single, compute_dtype,
          log_level):
    """Serve the routed library to apps, notebooks and chat UIs (OpenAI's API) and to a browser.

    Every adapter of the library is loaded once and stays resident; requests from all clients share
    one continuous batch, each row with its own adapter. `model` picks the answerer: auto (the
    router), base, an adapter, or a composition a:0.7+b:0.3; each response names the adapter, its
    domain and the router's confidence (the `locomlx` field and X-Locomlx-* headers).

    \b
    Endpoints: GET /  (web page)   GET /health   GET /v1/models   GET /v1/leaderboard
               POST /v1/chat/completions   POST /v1/completions  (stream: true for SSE)
    Vendor fields: reread, votes, ensemble (as in `locomlx chat`).

    \b
    Examples:
      locomlx serve                          # http://127.0.0.1:8000
      locomlx serve --port 8080 --api-key s3cret
    \b
      from openai import OpenAI
      client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
      client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "..."}])
    """
    from locomlx.serve.server import free_port, is_loopback, load_state, run

    if not is_loopback(host) and not api_key:
        click.secho(f"warning: listening on {host} without an API key: anyone who can reach this machine can "
                    "use the model. Pass --api-key (or set LOCOMLX_API_KEY).", fg="yellow", err=True)
    state = load_state(base_model, library_path(adapters_dir), router_name, api_key, max_batch, max_queue,
                       compute_dtype, cross_request=not single, on_convert=announce_conversion,
                       on_message=lambda line: click.echo(line, err=True))
    port = port or free_port(host)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    click.echo(f"locomlx serving on http://{shown}:{port}  (web page /, API /v1; Ctrl-C stops)", err=True)
    if not run(state, host, port, log_level):
        raise LocomlxError(f"Could not listen on {host}:{port} (uvicorn's message above); is another server "
                           "using the port? Pick another with --port.")
    click.echo("stopped.", err=True)
