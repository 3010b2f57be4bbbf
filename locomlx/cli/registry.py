"""Command line of the adapter registry: `registry`, `adapters`, `leaderboard`, `promote`, `report`.

Parses arguments, calls locomlx.registry, prints.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from locomlx.cli.options import adapters_dir_option, echo_json, json_option, library_path
from locomlx.errors import LocomlxError

import click
import yaml

# --- locomlx registry ---------------------------------------------------------------------------


@click.group()
def registry():
    """Create, check and refresh the adapter registry (registry.yaml in the library).

    The format is described in docs/registry.md.
    """


@registry.command("init")
@adapters_dir_option
@click.option("--base-model", default="smollm2-135m", show_default=True, metavar="MODEL",
              help="Base model every adapter is trained for: built-in name, .gguf, mlx-lm folder or hub id.")
@click.option("--quantization", required=True, metavar="TEXT", help="The base weights as shipped, e.g. Q4_1.")
@click.option("--academic-year", default=None, metavar="YYYY-YY", help="Academic year served [the current one].")
def registry_init(adapters_dir, base_model, quantization, academic_year):
    """Start a registry with no adapters, recording the base model's hash.

    \b
    Examples:
      locomlx registry init --quantization Q4_1
      locomlx registry init --adapters-dir my-library --base-model ./model.gguf --quantization Q8_0
    """
    from locomlx.registry.refresh import init_registry
    from locomlx.registry.store import registry_path

    library = library_path(adapters_dir)
    created = init_registry(library, base_model, quantization, academic_year)
    click.echo(f"Wrote {registry_path(library)} for base model {created.base_model.id} "
               f"({created.base_model.academic_year}).")


@registry.command("validate")
@adapters_dir_option
@json_option()
def registry_validate(adapters_dir, as_json):
    """Check the registry and its adapters; exit code 1 when any error is found.

    Lists every problem with file, line and field: schema errors, missing
    files, changed weights, eval/results.json disagreeing with the recorded
    scores, adapters that do not fit the base model (from shapes, without
    loading it), two active adapters in a domain, benchmarks under 50 and
    training sets under 500 examples, and training/benchmark overlap.

    \b
    Examples:
      locomlx registry validate
      locomlx registry validate --adapters-dir my-library --json
    """
    from locomlx.registry.store import read_registry, registry_path
    from locomlx.registry.validate import validate_library

    library = library_path(adapters_dir)
    problems = validate_library(library)
    errors = [p for p in problems if p.severity == "error"]
    if as_json:
        echo_json({"registry": str(registry_path(library)), "errors": len(errors),
                    "warnings": len(problems) - len(errors), "problems": [asdict(p) for p in problems]})
    else:
        for problem in problems:
            click.secho(str(problem), fg="red" if problem.severity == "error" else "yellow")
        adapters = len(read_registry(library)[0].adapters)
        verdict = "FAIL" if errors else "OK"
        click.echo(f"{registry_path(library)}: {verdict} · {adapters} adapters · {len(errors)} errors · "
                   f"{len(problems) - len(errors)} warnings")
    if errors:
        sys.exit(1)


@registry.command("refresh")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@adapters_dir_option
@json_option()
def registry_refresh(names, adapters_dir, as_json):
    """Re-read weights hashes, benchmarks and eval/results.json scores into the registry.

    Run it after retraining or re-evaluating an adapter on purpose; the new
    scores are also filed in the semester history. Without NAME, every
    installed adapter.

    \b
    Examples:
      locomlx registry refresh
      locomlx registry refresh sentiment-rt
    """
    from locomlx.registry.refresh import refresh_registry

    changes = refresh_registry(library_path(adapters_dir), list(names) or None)
    if as_json:
        echo_json(changes)
    else:
        click.echo("\n".join(changes) if changes else "Nothing to change: the registry matches the files.")


@registry.command("sync")
@adapters_dir_option
@json_option()
def registry_sync(adapters_dir, as_json):
    """After adding a domain: score every adapter on the benchmarks it lacks, refresh, retrain the router.

    Each installed adapter whose eval/results.json has no out-of-domain score
    on some other domain's benchmark (a new domain's) is scored there, adapter
    and base model, with the settings its results record, and the scores are
    added to its results (nothing else is evaluated again); the registry takes
    the new scores; and the embedding router is retrained if it no longer
    fits the active adapters. Nothing is done when nothing is missing.

    \b
    Examples:
      loco registry sync
      loco registry sync --adapters-dir my-library --json
    """
    from dataclasses import asdict

    from locomlx.cli.options import counter_progress
    from locomlx.eval.library import sync_library

    report = sync_library(library_path(adapters_dir), on_message=lambda m: click.echo(m, err=True),
                          on_progress=counter_progress())
    if as_json:
        echo_json(asdict(report))
        return
    for name, benchmarks in report.evaluated.items():
        click.echo(f"{name}: now scored on {', '.join(benchmarks)}")
    for name in report.not_evaluated:
        click.echo(f"{name}: has no eval/results.json; evaluate it first (CONTRIBUTING.md, step 4)")
    click.echo("\n".join(report.registry_changes))
    router = {"current": "the router fits the active adapters", "retrained": "the router was retrained",
              "none": "no embedding router to retrain"}[report.router]
    click.echo(f"Synced: {len(report.evaluated)} adapter(s) re-evaluated; {router}.")


# --- locomlx adapters ---------------------------------------------------------------------------


@click.group()
def adapters():
    """List, inspect, install and remove the adapters of the library."""


@adapters.command("list")
@click.option("--domain", default=None, help="Only this domain.")
@adapters_dir_option
@json_option()
def adapters_list(domain, adapters_dir, as_json):
    """List registered adapters (* = active in its domain).

    \b
    Examples:
      locomlx adapters list
      locomlx adapters list --domain sentiment --json
    """
    from locomlx.registry.schema import entry_to_dict
    from locomlx.registry.store import load_registry

    entries = [e for e in load_registry(library_path(adapters_dir)).adapters.values() if domain in (None, e.domain)]
    if as_json:
        echo_json([{"name": e.name, **entry_to_dict(e)} for e in entries])
        return
    if not entries:
        click.echo("No adapters registered. Add one: locomlx adapters install SOURCE --domain DOMAIN")
        return
    click.echo(f"{'adapter':<28} {'domain':<14} {'version':<9} {'semester':<12} {'score':>6}  where")
    for e in entries:
        score = f"{e.scores.adapter_score:.3f}" if e.scores else "-"
        where = e.path if e.installed else f"not installed ({e.source})"
        click.echo(f"{e.name + (' *' if e.active else ''):<28} {e.domain:<14} {e.version:<9} {e.semester or '-':<12} "
                   f"{score:>6}  {where}")


@adapters.command("info")
@click.argument("name")
@adapters_dir_option
@json_option()
def adapters_info(name, adapters_dir, as_json):
    """Show everything the registry knows about one adapter.

    \b
    Example:
      locomlx adapters info sentiment-rt
    """
    from locomlx.registry.schema import entry_to_dict
    from locomlx.registry.store import load_registry

    registry = load_registry(library_path(adapters_dir))
    entry = registry.entry(name)
    history = [asdict(r) for r in registry.history if r.adapter == name]
    if as_json:
        echo_json({"name": name, **entry_to_dict(entry), "history": history})
        return
    click.echo(yaml.safe_dump({name: entry_to_dict(entry)}, sort_keys=False, allow_unicode=True).rstrip())
    for record in history:
        click.echo(f"  {record['semester']}: score {record['adapter_score']:.3f} ({record['improvement']:+.3f} over "
                   f"the base), recorded {record['recorded']}")


@adapters.command("install")
@click.argument("source")
@click.option("--domain", required=True, help="Task family, e.g. sentiment.")
@click.option("--name", default=None, help="Library name [the folder, archive or repo name].")
@click.option("--version", "version", default="1.0.0", show_default=True, metavar="X.Y.Z", help="Adapter version.")
@click.option("--semester", default=None, metavar="YYYY-TERM", help="e.g. 2026-fall [the current semester].")
@click.option("--description", default="", help="What it does, in a sentence (also the router's description).")
@click.option("--author", "authors", multiple=True, help="An author (repeatable).")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--keyword", "keywords", multiple=True, help="A router keyword (repeatable).")
@click.option("--metric", default=None, help="Benchmark metric [from its eval/results.json].")
@click.option("--revision", default=None, help="Hugging Face revision (branch, tag or commit).")
@click.option("--benchmark", default=None, metavar="FILE",
              help="The adapter's benchmark JSONL, for a source without eval/benchmark.jsonl (a hub repo, a .gguf).")
@adapters_dir_option
@json_option()
def adapters_install(source, domain, name, version, semester, description, authors, tags, keywords, metric, revision,
                     benchmark, adapters_dir, as_json):
    """Install an adapter and register it.

    SOURCE is a Hugging Face repo id, a local adapter folder (one already in
    the library is registered where it is), a .tar.gz/.tgz/.zip archive, or
    a llama.cpp LoRA (.gguf, as `locomlx export --format gguf` writes it).
    Only safetensors weights are accepted; archives with paths leading out,
    outside links or oversize members are refused; the adapter must fit the
    registry's base model. Its weights' sha256 is recorded, and its
    eval/results.json scores if it has one. A failure changes nothing.

    \b
    Examples:
      locomlx adapters install adapters/sentiment-rt --domain sentiment --keyword review
      locomlx adapters install cohort/sentiment-rt --domain sentiment --revision v1.0.0
      locomlx adapters install ~/Downloads/math-tutor.tar.gz --domain math --author "Ada Lovelace"
      locomlx adapters install tutor.lora.gguf --domain math --benchmark data/benchmark.jsonl
    """
    from locomlx.registry.install import AdapterInfo, install_adapter
    from locomlx.registry.schema import entry_to_dict

    info = AdapterInfo(domain, name, version, semester, description, list(authors), list(tags), list(keywords), metric,
                       benchmark)
    library = library_path(adapters_dir)
    entry = install_adapter(source, library, info, revision)
    if as_json:
        echo_json({"name": entry.name, **entry_to_dict(entry)})
        return
    click.echo(f"Installed {entry.name} ({entry.domain}, {entry.version}) in {library / entry.path}; "
               f"sha256 {entry.sha256[:12]}.")
    click.echo(f"To answer for {entry.domain} with it: locomlx promote {entry.name}")


@adapters.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Confirm: delete the adapter's folder and unregister it.")
@click.option("--keep-files", is_flag=True, help="Unregister only; leave the folder in place.")
@adapters_dir_option
def adapters_remove(name, yes, keep_files, adapters_dir):
    """Unregister an adapter and delete its folder (its history is kept).

    \b
    Examples:
      locomlx adapters remove old-sentiment --yes
      locomlx adapters remove old-sentiment --keep-files
    """
    from locomlx.registry.install import remove_adapter

    if not (yes or keep_files):
        raise LocomlxError(f"Removing '{name}' deletes its folder: confirm with --yes, or pass --keep-files to "
                           "only unregister it.")
    entry = remove_adapter(library_path(adapters_dir), name, keep_files)
    kept = " (folder kept)" if keep_files or not entry.installed else ""
    click.echo(f"Removed {name}{kept}."
               + (f" Domain {entry.domain} has no active adapter now." if entry.active else ""))


# --- locomlx leaderboard | promote | report ------------------------------------------------------


@click.command()
@click.option("--domain", default=None, help="Only this domain.")
@click.option("--markdown", default=None, is_flag=False, flag_value="-", metavar="[FILE]",
              help="Print a Markdown page, or write it to FILE.")
@adapters_dir_option
@json_option()
def leaderboard(domain, markdown, adapters_dir, as_json):
    """Rank each domain's adapters by their registered scores.

    Columns: score on the adapter's benchmark, improvement over the base
    model, out-of-domain drop, significance, semester; * marks the active
    adapter.

    \b
    Examples:
      locomlx leaderboard
      locomlx leaderboard --domain sentiment --json
      locomlx leaderboard --markdown docs/leaderboard.md
    """
    from locomlx.atomic import write_text_atomic
    from locomlx.registry.leaderboard import format_leaderboard, format_markdown
    from locomlx.registry.leaderboard import leaderboard as rank
    from locomlx.registry.store import load_registry

    if as_json and markdown:
        raise click.UsageError("Choose one of --json and --markdown.")
    library = library_path(adapters_dir)
    registry = load_registry(library)
    board = rank(registry, domain, library)
    if as_json:
        echo_json({d: [asdict(r) for r in rankings] for d, rankings in board.items()})
    elif markdown:
        page = format_markdown(board, registry.base_model.academic_year if registry.base_model else None)
        if markdown == "-":
            click.echo(page, nl=False)
        else:
            write_text_atomic(Path(markdown), page)
            click.echo(f"Wrote {markdown}")
    else:
        click.echo(format_leaderboard(board))


@click.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Promote even without a significant gain or with >5 points OOD loss.")
@adapters_dir_option
@json_option()
def promote(name, force, adapters_dir, as_json):
    """Make NAME the active adapter of its domain, demoting the previous one.

    Refused (with the reason) unless its registered scores show a significant
    in-domain gain and at most 5 points out-of-domain degradation; --force
    overrides that.

    \b
    Examples:
      locomlx promote sentiment-rt
      locomlx promote sentiment-experimental --force
    """
    from locomlx.registry.promote import promote as activate

    done = activate(library_path(adapters_dir), name, force)
    if as_json:
        echo_json(asdict(done))
        return
    replaced = f", replacing {done.previous}" if done.previous else ""
    click.echo(f"{name} is now the active {done.domain} adapter{replaced}.")
    if done.overridden:
        click.secho(f"Promoted with --force despite: {'; '.join(done.overridden)}.", fg="yellow", err=True)


@click.command()
@click.option("--domain", default=None, help="Only this domain.")
@adapters_dir_option
@json_option()
def report(domain, adapters_dir, as_json):
    """Per-domain trend across semesters, from the registry's history.

    For each semester: the best adapter's score, its gain over the base
    model, the change since the previous semester and how many adapters were
    evaluated.

    \b
    Examples:
      locomlx report
      locomlx report --domain math --json
    """
    from locomlx.registry.history import format_trend, semester_trend
    from locomlx.registry.store import load_registry

    trend = semester_trend(load_registry(library_path(adapters_dir)), domain)
    if as_json:
        echo_json({d: [asdict(p) for p in points] for d, points in trend.items()})
    else:
        click.echo(format_trend(trend))
