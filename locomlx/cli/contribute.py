"""`locomlx propose` and `locomlx check`: steps 1 and 5 of the contributing guide (CONTRIBUTING.md)."""

from __future__ import annotations

import json
import sys

from locomlx.cli.options import adapters_dir_option, base_model_option, json_option, library_path

import click


@click.command()
@click.argument("proposal", type=click.Path())
@base_model_option
@click.option("--max-tokens", default=128, show_default=True, type=click.IntRange(1), help="Most tokens per answer.")
def propose(proposal, base_model, max_tokens):
    """Run the base model on a proposal's example queries and write its answers into the proposal.

    PROPOSAL is the adapter-proposal issue text saved as a file (the template is
    .github/ISSUE_TEMPLATE/adapter-proposal.md); the bullets under "## Example
    queries" are asked one by one, and a section "## What the base model answers
    now" is written at its end (replaced on every run). Paste the result into the
    proposal issue: it shows where the base model does poorly.

    \b
    Examples:
      loco propose adapters/past-tense/PROPOSAL.md
      loco propose PROPOSAL.md --base-model ./my-model.gguf
    """
    from locomlx.eval.proposal import answer_proposal

    done = answer_proposal(proposal, base_model, max_tokens)
    for query, answer in zip(done.queries, done.answers):
        click.echo(f"Q: {query}\nA: {answer.strip()}\n")
    click.echo(f"Wrote the base model's answers ({done.base_model}) into {done.path}.")


@click.command()
@click.argument("name")
@adapters_dir_option
@json_option("the checklist")
def check(name, adapters_dir, as_json):
    """The pull-request checklist for adapter NAME, each item ticked or crossed; exit 1 when one fails.

    Checks the files (weights, config, data, benchmark, training log, the
    data script), 500+ training and 50+ benchmark examples, no benchmark leak,
    TRAINING_LOG.md filled in, the evaluation against the base model on the
    current benchmark and out of domain on every other benchmark of the
    library, the registry entry, and that no pickled file is included. Whether
    the adapter passes the acceptance bar is shown but not required for a PR.

    \b
    Examples:
      loco check past-tense
      loco check past-tense --adapters-dir my-library --json
    """
    from locomlx.registry.checklist import check_adapter

    items = check_adapter(library_path(adapters_dir), name)
    failed = [item for item in items if item.required and not item.ok]
    if as_json:
        click.echo(json.dumps({"adapter": name, "ok": not failed, "items": [i.to_dict() for i in items]}, indent=2))
    else:
        for item in items:
            click.secho(item.line(), fg="green" if item.ok else ("red" if item.required else "yellow"))
        click.echo(f"{name}: {'ready for a pull request' if not failed else f'{len(failed)} item(s) to fix'}")
    if failed:
        sys.exit(1)
