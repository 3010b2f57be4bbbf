"""`loco check NAME`: the pull-request checklist, each item crossed with its fix when the files say so."""

import json

from locomlx.cli import main
from locomlx.data.training_log import template_for
from locomlx.registry.checklist import check_adapter

from click.testing import CliRunner

from tests.test_registry_fixtures import add_adapter, write_adapter

pytest_plugins = ["tests.test_registry_fixtures"]  # the `library` fixture


def _items(library, name):
    return {item.label: item for item in check_adapter(library, name)}


def test_each_missing_piece_is_crossed_with_its_fix(library, tiny_model):
    add_adapter(library, tiny_model, "alpha", seed=1)
    add_adapter(library, tiny_model, "beta", domain="spam", seed=2)
    items = _items(library, "alpha")
    assert "training/TRAINING_LOG.md" in items["adapter files"].detail
    assert "training/generate.py" in items["adapter files"].detail
    assert not items["TRAINING_LOG.md filled in"].ok
    assert "beta/eval/benchmark.jsonl" in items["evaluated out of domain on every other domain's benchmark"].detail
    assert "loco registry sync" in items["evaluated out of domain on every other domain's benchmark"].detail
    (library / "alpha" / "training" / "TRAINING_LOG.md").write_text(template_for("alpha"))
    (library / "alpha" / "optimizer.pt").write_bytes(b"pickle")
    items = _items(library, "alpha")
    assert "still say '(fill in)'" in items["TRAINING_LOG.md filled in"].detail
    assert not items["no pickled files (safetensors only)"].ok and "optimizer.pt" in items["no pickled files "
                                                                                          "(safetensors only)"].detail
    result = CliRunner().invoke(main, ["check", "alpha", "--adapters-dir", str(library), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert not report["ok"] and any(not i["ok"] for i in report["items"])


def test_an_unregistered_adapter_is_told_how_to_register(library, tiny_model):
    write_adapter(library / "gamma", tiny_model, seed=3)
    item = _items(library, "gamma")["registered in registry.yaml"]
    assert not item.ok and "loco adapters install" in item.detail
