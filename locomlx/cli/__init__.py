"""The `locomlx` command line: one module per command group, each parsing arguments, calling the library and
printing; shared options live in options.py. No business logic lives here."""

from __future__ import annotations

import errno
import os
import sys
import traceback
import warnings

from locomlx._version import __version__
from locomlx.cli.bench import bench
from locomlx.cli.chat import chat
from locomlx.cli.contribute import check, propose
from locomlx.cli.data import data
from locomlx.cli.eval import eval_command
from locomlx.cli.export import export_command, fuse
from locomlx.cli.feedback import feedback
from locomlx.cli.migrate import migrate
from locomlx.cli.registry import adapters, leaderboard, promote, registry, report
from locomlx.cli.router import route, router
from locomlx.cli.serve import serve
from locomlx.cli.train import train_command
from locomlx.errors import LocomlxError, LostRank

import click

_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def _clean_warnings() -> None:
    """Warnings from the library as one line each ("warning: ..."), not Python's file:line: UserWarning form."""
    def show(message, category, filename, lineno, file=None, line=None):
        click.secho(f"warning: {message}", fg="yellow", err=True)

    warnings.showwarning = show


def _clean_errors(invoke, ctx):
    """Turn a LocomlxError into one clean line and exit code 1 (the full traceback with --debug)."""
    try:
        return invoke(ctx)
    except LocomlxError as exc:
        if (ctx.obj and ctx.obj.get("debug")) or "--debug" in sys.argv:
            traceback.print_exc()
        click.secho(f"error: {exc}", fg="red", err=True)
        if isinstance(exc, LostRank):
            # MLX's teardown waits on the collective the lost peer never finishes: leave without it.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        sys.exit(1)
    except OSError as exc:
        if exc.errno not in _UNWRITABLE:
            raise
        if (ctx.obj and ctx.obj.get("debug")) or "--debug" in sys.argv:
            traceback.print_exc()
        where = exc.filename or "a file"
        click.secho(f"error: cannot write {where}: {exc.strerror}. The command needs to write there (the adapter "
                    "library and its registry, or the output folder): make it writable, free space, or point the "
                    "command at a copy (--adapters-dir, --output).", fg="red", err=True)
        sys.exit(1)


class _Group(click.Group):
    def invoke(self, ctx):
        return _clean_errors(super().invoke, ctx)

    def list_commands(self, ctx):  # in the order a contributor meets them, not alphabetical
        return list(self.commands)


class _Command(click.Command):
    def invoke(self, ctx):
        return _clean_errors(super().invoke, ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(__version__, prog_name="locomlx")
@click.pass_context
def main(ctx, debug):
    """locomlx: one small 4-bit base model, many LoRA specialists, answers on your laptop.

    \b
    Quick start:
      locomlx chat "What is the capital of France?"
      locomlx chat                      # interactive; /help lists commands
    """
    from locomlx.heap import keep_freed_memory

    keep_freed_memory()  # the command owns its process (see locomlx/heap.py)
    _clean_warnings()
    ctx.obj = {"debug": debug}


for _command in (chat, propose, data, train_command, eval_command, check, registry, adapters, leaderboard, promote,
                 report, route, router, feedback, serve, fuse, export_command, bench, migrate):
    main.add_command(_command)


def run_as_script(command: click.Command, prog_name: str) -> None:
    """Run one command as its own program (scripts/fine_tune.py, scripts/evaluate.py): its own usage line
    and --help, the same clean errors as `locomlx`."""
    from locomlx.heap import keep_freed_memory

    keep_freed_memory()
    _clean_warnings()
    script = _Command(command.name, params=command.params, callback=command.callback, help=command.help,
                      context_settings={"help_option_names": ["-h", "--help"]})
    script.main(sys.argv[1:], prog_name=prog_name)


if __name__ == "__main__":
    main()
