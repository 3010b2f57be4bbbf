"""`locomlx adapters install | remove | list | info`: every source, every hostile archive, nothing half done."""

import io
import json
import os
import shutil
import tarfile
import zipfile

from locomlx.cli import main
from locomlx.errors import LocomlxError
from locomlx.provenance import file_sha256
from locomlx.registry import load_registry
from locomlx.registry.archive import ArchiveLimits
from locomlx.registry.install import AdapterInfo, install_adapter
from locomlx.registry.validate import validate_library

import pytest
from click.testing import CliRunner

from tests import tiny
from tests.test_registry_fixtures import add_adapter, snapshot, write_adapter

pytest_plugins = ["tests.test_registry_fixtures"]  # the `library` fixture

INFO = AdapterInfo("sentiment", keywords=["review"], authors=["Ada"])


@pytest.fixture()
def source(tmp_path, tiny_model):
    """A complete adapter folder outside the library."""
    return write_adapter(tmp_path / "outside" / "sent", tiny_model, seed=4)


def add_tree(tar: tarfile.TarFile, folder, prefix):
    for path in sorted(folder.rglob("*")):
        tar.add(path, f"{prefix}/{path.relative_to(folder)}", recursive=False)


def tar_of(folder, path, extra=()):
    """A .tar.gz of `folder` under a top folder, plus extra (TarInfo, bytes) members."""
    with tarfile.open(path, "w:gz") as tar:
        add_tree(tar, folder, "sent")
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name, data=b"x", **attrs):
    info = tarfile.TarInfo(name)
    info.size = len(data) if data is not None else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def test_install_a_folder_copies_checks_and_registers(library, source):
    entry = install_adapter(str(source), library, INFO)
    folder = library / "sent"
    assert entry.path == "sent" and entry.sha256 == file_sha256(folder / "adapter_model.safetensors")
    assert os.readlink(folder / "adapters.safetensors") == "adapter_model.safetensors"  # links stay links
    registry = load_registry(library)
    assert registry.adapters["sent"] == entry and entry.router_keywords == ["review"]
    assert entry.benchmark == "sent/eval/benchmark.jsonl" and entry.metric == "exact_match"
    assert entry.scores.adapter_score == 0.8 and [r.adapter for r in registry.history] == ["sent"]
    assert validate_library(library) == []
    assert not [p for p in library.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_folder_in_the_library_registers_in_place(library, tiny_model):
    folder = write_adapter(library / "here", tiny_model, seed=5)
    before = snapshot(folder)
    install_adapter(str(folder), library, AdapterInfo("sentiment"))
    assert snapshot(folder) == before and "here" in load_registry(library).adapters
    with pytest.raises(LocomlxError, match="its name is its folder name 'here'"):
        install_adapter(str(folder), library, AdapterInfo("sentiment", name="other"))


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_install_an_archive(library, source, tmp_path, suffix):
    archive = tmp_path / f"sentiment-rt{suffix}"
    if suffix == ".zip":
        shutil.make_archive(str(tmp_path / "sentiment-rt"), "zip", source.parent, "sent")
    else:
        tar_of(source, archive)
    entry = install_adapter(str(archive), library, INFO)
    assert entry.name == "sentiment-rt" and (library / "sentiment-rt" / "adapter_config.json").is_file()
    assert validate_library(library) == []


def fake_hub(folder, calls):
    def snapshot_download(repo_id, revision=None, local_dir=None, allow_patterns=None):
        calls.append((repo_id, revision, allow_patterns))
        shutil.copytree(folder, local_dir, symlinks=True)
        (local_dir / ".cache" / "huggingface").mkdir(parents=True)
        return str(local_dir)

    return snapshot_download


def test_install_from_the_hub(library, source, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_hub(source, calls))
    entry = install_adapter("cohort/sentiment-rt", library, INFO, revision="v1")
    assert calls[0][:2] == ("cohort/sentiment-rt", "v1") and "*.safetensors" in calls[0][2]
    assert not any(p.endswith((".bin", ".pt")) for p in calls[0][2])
    assert entry.name == "sentiment-rt" and entry.source == "cohort/sentiment-rt@v1"
    assert not (library / "sentiment-rt" / ".cache").exists()


def test_a_hub_repo_without_safetensors_is_refused(library, source, monkeypatch, tmp_path):
    import huggingface_hub

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(source / "adapter_config.json", pickled)  # the .bin weights are never downloaded
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_hub(pickled, []))
    before = snapshot(library)
    with pytest.raises(LocomlxError, match="has no adapter_model.safetensors; pickled weights"):
        install_adapter("cohort/pickled", library, INFO)
    assert snapshot(library) == before


def test_the_hub_offline_is_explained(library):
    with pytest.raises(LocomlxError, match="HF_HUB_OFFLINE is set or there is no network"):
        install_adapter("cohort/not-cached", library, INFO)


def hostile(kind, source, tmp_path):
    """Archives that must be refused, and what each would have written outside the library."""
    outside = tmp_path / "escaped"
    if kind == "traversal":
        return tar_of(source, tmp_path / "a.tar.gz", [member("sent/../../escaped", b"pwned")])
    if kind == "absolute":
        return tar_of(source, tmp_path / "a.tar.gz", [member(str(outside), b"pwned")])
    if kind == "symlink out":
        return tar_of(source, tmp_path / "a.tar.gz", [member("sent/notes", None, type=tarfile.SYMTYPE,
                                                             linkname="../../../escaped")])
    if kind == "absolute symlink":
        return tar_of(source, tmp_path / "a.tar.gz", [member("sent/notes", None, type=tarfile.SYMTYPE,
                                                             linkname=str(outside))])
    if kind == "hard link":
        return tar_of(source, tmp_path / "a.tar.gz", [member("sent/notes", None, type=tarfile.LNKTYPE,
                                                             linkname="/etc/passwd")])
    if kind == "device":
        return tar_of(source, tmp_path / "a.tar.gz", [member("sent/dev", None, type=tarfile.CHRTYPE)])
    if kind == "pickle":
        return tar_of(source, tmp_path / "a.tar.gz", [member("sent/adapter_model.bin", b"\x80\x04K\x01.")])
    if kind == "zip traversal":
        with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
            archive.writestr("sent/adapter_config.json", "{}")
            archive.writestr("../escaped", "pwned")
        return tmp_path / "a.zip"
    if kind == "zip symlink out":
        with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
            for path in sorted(source.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    archive.write(path, f"sent/{path.relative_to(source)}")
            link = zipfile.ZipInfo("sent/notes")
            link.external_attr = (0o120777 << 16)
            archive.writestr(link, "../../escaped")
        return tmp_path / "a.zip"
    if kind == "not an archive":
        (tmp_path / "a.tar.gz").write_bytes(b"not gzip at all")
        return tmp_path / "a.tar.gz"
    raise ValueError(kind)


HOSTILE = {
    "traversal": "'..' path", "absolute": "absolute or '..' path", "symlink out": "points outside the archive",
    "absolute symlink": "points outside the archive", "hard link": "hard link, device or FIFO",
    "device": "hard link, device or FIFO", "pickle": "pickle-format file", "zip traversal": "'..' path",
    "zip symlink out": "points outside the archive", "not an archive": "cannot be unpacked",
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_archives_change_nothing(library, source, tmp_path, kind):
    archive = hostile(kind, source, tmp_path)
    before = snapshot(library)
    with pytest.raises(LocomlxError, match=HOSTILE[kind]):
        install_adapter(str(archive), library, INFO)
    assert snapshot(library) == before
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("limits, words", [
    (ArchiveLimits(max_member_bytes=100_000), "too large"),
    (ArchiveLimits(max_total_bytes=200_000), "too large"),
    (ArchiveLimits(max_members=5), "more than 5 members"),
])
def test_oversize_archives_are_refused(library, source, tmp_path, limits, words):
    archive = tar_of(source, tmp_path / "big.tar.gz", [member("sent/padding.txt", b"0" * 150_000)])
    before = snapshot(library)
    with pytest.raises(LocomlxError, match=words):
        install_adapter(str(archive), library, INFO, limits=limits)
    assert snapshot(library) == before


def test_local_folders_are_vetted_too(library, source):
    before = snapshot(library)
    (source / "notes").symlink_to("/etc/passwd")
    with pytest.raises(LocomlxError, match="'notes' is a link to /etc/passwd, outside the adapter"):
        install_adapter(str(source), library, INFO)
    (source / "notes").unlink()
    (source / "optimizer.pt").write_bytes(b"\x80\x04.")
    with pytest.raises(LocomlxError, match="'optimizer.pt' is a pickle-format file"):
        install_adapter(str(source), library, INFO)
    assert snapshot(library) == before


def test_an_adapter_for_another_base_is_refused(library, tiny_model, tmp_path):
    other = tmp_path / "other-model"
    other.mkdir()
    config = json.loads((tiny_model / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(dict(config, hidden_size=96)))
    folder = tiny.make_adapter(tmp_path / "wrong", other, rank=4)
    before = snapshot(library)
    with pytest.raises(LocomlxError, match="does not fit the registry's base model: .*trained for a different base"):
        install_adapter(str(folder), library, INFO)
    assert snapshot(library) == before


def test_names_and_fields_are_checked_before_anything_is_copied(library, source, tiny_model):
    add_adapter(library, tiny_model, "taken", seed=6)
    before = snapshot(library)
    with pytest.raises(LocomlxError, match="'taken' is already registered"):
        install_adapter(str(source), library, AdapterInfo("sentiment", name="taken"))
    with pytest.raises(LocomlxError, match="adapters.sent.version: '1.0' has the wrong format"):
        install_adapter(str(source), library, AdapterInfo("sentiment", version="1.0"))
    with pytest.raises(LocomlxError, match="adapters.sent.semester"):
        install_adapter(str(source), library, AdapterInfo("sentiment", semester="autumn"))
    (library / "sent").mkdir()
    with pytest.raises(LocomlxError, match="already exists"):
        install_adapter(str(source), library, INFO)
    (library / "sent").rmdir()
    assert snapshot(library) == before


def test_a_failed_registry_write_puts_the_folder_back(library, source, monkeypatch):
    import locomlx.registry.store as store

    before = snapshot(library)
    monkeypatch.setattr(store.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        install_adapter(str(source), library, INFO)
    assert snapshot(library) == before


def test_a_library_without_registry_is_told_how_to_start(tmp_path, source):
    with pytest.raises(LocomlxError, match="locomlx registry init"):
        install_adapter(str(source), tmp_path / "empty", INFO)


def test_cli_install_list_info_remove(library, source):
    runner = CliRunner()
    args = ["--adapters-dir", str(library)]
    installed = runner.invoke(main, ["adapters", "install", str(source), "--domain", "sentiment", "--author", "Ada",
                                     "--keyword", "review", "--semester", "2026-fall", *args])
    assert installed.exit_code == 0, installed.output
    assert "Installed sent (sentiment, 1.0.0)" in installed.output and "locomlx promote sent" in installed.output
    listing = runner.invoke(main, ["adapters", "list", *args])
    assert "sent" in listing.output and "0.800" in listing.output
    as_json = json.loads(runner.invoke(main, ["adapters", "list", "--json", *args]).output)
    assert as_json[0]["name"] == "sent" and as_json[0]["authors"] == ["Ada"]
    info = runner.invoke(main, ["adapters", "info", "sent", *args])
    assert "domain: sentiment" in info.output and "2026-fall: score 0.800" in info.output
    assert runner.invoke(main, ["adapters", "info", "nope", *args]).exit_code == 1
    refused = runner.invoke(main, ["adapters", "remove", "sent", *args])
    assert refused.exit_code == 1 and "--yes" in refused.output and (library / "sent").is_dir()
    removed = runner.invoke(main, ["adapters", "remove", "sent", "--yes", *args])
    assert removed.exit_code == 0 and not (library / "sent").exists()
    registry = load_registry(library)
    assert "sent" not in registry.adapters and [r.adapter for r in registry.history] == ["sent"]  # history stays
    assert not [p for p in library.iterdir() if p.name.startswith(".")]


def test_remove_can_keep_the_files(library, tiny_model):
    folder = add_adapter(library, tiny_model, "keep", seed=7)
    result = CliRunner().invoke(main, ["adapters", "remove", "keep", "--keep-files", "--adapters-dir", str(library)])
    assert result.exit_code == 0 and "folder kept" in result.output and folder.is_dir()
    assert "keep" not in load_registry(library).adapters


def test_an_improved_adapter_is_a_new_version_of_the_same_adapter(library, tiny_model):
    """A higher --version under a registered name replaces the adapter, keeps the old results and history, and
    the leaderboard lists both versions and says when they were scored on different sizes."""
    from locomlx.registry.leaderboard import format_leaderboard, leaderboard

    from tests.test_registry_fixtures import fake_results

    add_adapter(library, tiny_model, "sent", seed=4, adapter_score=0.7)
    old_results = (library / "sent" / "eval" / "results.json").read_text()
    v2 = write_adapter(library / "sent-v2", tiny_model, seed=4)
    bench = v2 / "eval" / "benchmark.jsonl"
    (v2 / "eval" / "results.json").write_text(json.dumps(dict(fake_results("sent", bench, adapter_score=0.85),
                                                             n_examples=40)))
    with pytest.raises(LocomlxError, match="already registered at version 1.0.0; .* higher --version \\(e.g. 1.1.0\\)"):
        install_adapter(str(v2), library, AdapterInfo("sentiment", name="sent", version="1.0.0"))
    entry = install_adapter(str(v2), library, AdapterInfo("sentiment", name="sent", version="1.1.0"))
    assert entry.version == "1.1.0" and not (library / "sent-v2").exists()
    assert (library / "sent" / "eval" / "previous" / "1.0.0" / "results.json").read_text() == old_results
    registry = load_registry(library)
    assert {(r.version, r.adapter_score) for r in registry.history} == {("1.0.0", 0.7), ("1.1.0", 0.85)}
    rows = leaderboard(registry, library=library)["sentiment"]
    assert [(r.version, r.rank, r.previous) for r in rows] == [("1.1.0", 1, False), ("1.0.0", None, True)]
    text = format_leaderboard(leaderboard(registry, library=library))
    assert "1.0.0 (earlier)" in text and "sent 1.0.0 was scored on 50 examples, sent 1.1.0 on 40" in text
    assert validate_library(library) == []
    with pytest.raises(LocomlxError, match="already registered at version 1.1.0"):
        install_adapter(str(library / "sent"), library, AdapterInfo("sentiment", name="sent", version="1.0.5"))
