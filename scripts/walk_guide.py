#!/usr/bin/env python3
"""Walk CONTRIBUTING.md's five steps with its exact commands, as a student adding the domain `your-domain`.

The commands are read from the guide's ```bash blocks, so the guide and this walk cannot drift apart. Between
them the student's own work is done as a student would: fill in the proposal, write the data script
(`training/generate.py`: rewrite a sentence in the past tense, scored case-sensitively) and fill in the
training log. The walk runs in a scratch copy of a library (with links to this clone's scripts and
templates), so the library it starts from is never touched.

    python scripts/walk_guide.py                  # the real embedded model on a copy of adapters/ (~1 hour)
    python scripts/walk_guide.py --workdir /tmp/walk --keep > walk.log
    python scripts/walk_guide.py --workdir /tmp/walk --keep --continue-from walk.log   # after a stop

`tests/test_contributing.py` walks the same commands on the tiny test model. Writes docs/guide-walk.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "CONTRIBUTING.md"
DOMAIN = "your-domain"
EVALUATE_FAIL = 2  # scripts/evaluate.py's exit code for a FAIL verdict: a result, not an error

GENERATE = '''"""Past-tense rewrites: a present-tense sentence in, the same sentence in the past tense out.

Built from templates (subject, regular verb, object), deterministic; training and benchmark use different
verbs, so no benchmark sentence can be learnt by heart.
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUBJECTS = [("I", ""), ("We", ""), ("They", ""), ("You", ""), ("She", "s"), ("He", "s"), ("My friend", "s"),
            ("The children", "")]
VERBS = ["walk", "talk", "play", "cook", "clean", "paint", "watch", "visit", "open", "close", "fix", "wash",
         "call", "help", "follow", "pack", "push", "pull", "climb", "kick", "lift", "mark", "order", "point"]
OBJECTS = ["the door", "the car", "the old house", "a small boat", "the garden", "the red box", "our kitchen",
           "the new bike", "the window", "the big table", "a letter", "the fence"]
INSTRUCTION = "Rewrite the sentence in the past tense. Reply with the sentence only."


def present(verb, ending):
    if ending and verb.endswith(("sh", "ch", "x", "s")):
        return verb + "es"
    return verb + ending


def past(verb):
    return verb + ("d" if verb.endswith("e") else "ed")


def rows(verbs, seed):
    items = [(s, e, v, o) for s, e in SUBJECTS for v in verbs for o in OBJECTS]
    random.Random(seed).shuffle(items)
    return [{"instruction": INSTRUCTION, "input": f"{s} {present(v, e)} {o}.", "output": f"{s} {past(v)} {o}.",
             "metric": "exact_match_cased"} for s, e, v, o in items]


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\\n" for r in data), encoding="utf-8")


train = [dict(r) for r in rows(VERBS[:20], 0)[:520]]
for r in train:
    del r["metric"]
write(HERE / "dataset.jsonl", train)
write(HERE.parent / "eval" / "benchmark.jsonl", rows(VERBS[20:], 1)[:60])
print(f"wrote {len(train)} training rows and 60 benchmark rows")
'''

PROPOSAL_ANSWERS = {
    "(fill in: one short name, lowercase, e.g. past-tense; it becomes the folder adapters/YOUR-DOMAIN)": DOMAIN,
    "(fill in: what the adapter does, in two or three sentences, and who needs it)":
        "Rewrites an English sentence in the past tense, for language learners checking their homework.",
    "(fill in: where the 500+ training and 50+ benchmark rows come from)": "generated from templates; CC0",
    "(fill in: the script, and the model and prompts if a model writes rows)": "training/generate.py; no model",
    "(fill in: exact_match, exact_match_cased, choice, rouge_l, pass@1 or judge; see docs/evaluation.md)":
        "exact_match_cased",
    "(fill in: names, semester)": "Ada Lovelace, 2026-fall",
}
QUERIES = ["Rewrite in the past tense: I walk to the park.", "Past tense, please: She cooks dinner.",
           "Put this in the past tense: They play football."]
LOG_ANSWERS = {
    "**Source**": "templates in training/generate.py (subjects x regular verbs x objects), written by the team",
    "**Licence**": "CC0",
    "**Script**": "training/generate.py, run as `python adapters/your-domain/training/generate.py`",
    "**Generation model**": "none: the rows are built from templates",
    "**Prompts**": "none",
    "**What was removed and why**": "nothing: templates give no duplicates; benchmark verbs are not in training",
    "**Reviewed**": "60 of 580 rows (10%), random, seed 1",
    "**Rejected**": "0 (0%)",
    "**Edited**": "0 (0%)",
    "**What you checked and what you found**": "spelling of the past forms and of the -es present forms",
}


def fill_proposal(workdir: Path) -> None:
    path = workdir / "adapters" / DOMAIN / "PROPOSAL.md"
    text = path.read_text(encoding="utf-8")
    for placeholder, answer in PROPOSAL_ANSWERS.items():
        text = text.replace(placeholder, answer)
    text = text.replace("- (fill in)\n- (fill in)\n- (fill in)", "\n".join(f"- {q}" for q in QUERIES))
    path.write_text(text, encoding="utf-8")


def write_generator(workdir: Path) -> None:
    (workdir / "adapters" / DOMAIN / "training" / "generate.py").write_text(GENERATE, encoding="utf-8")


def fill_training_log(workdir: Path) -> None:
    """Answer each placeholder with what the item (the last **Item** above it) asks."""
    path = workdir / "adapters" / DOMAIN / "training" / "TRAINING_LOG.md"
    lines, item = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        item = next((key for key in LOG_ANSWERS if key.startswith("**") and key in line), item)
        if "(fill in: the adapter's name)" in line:
            line = line.replace("(fill in: the adapter's name)", DOMAIN)
        elif "(fill in)" in line:
            line = line.replace("(fill in)", LOG_ANSWERS[item] if line.startswith(("- ", "  ")) and item else
                                "Templates only cover regular verbs and third-person -s/-es forms.")
        lines.append(line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# The student's own work, done just before the guide command that needs it (matched by its start).
BEFORE = {
    "loco propose": fill_proposal,
    "python adapters/your-domain/training/generate.py": write_generator,
    "loco data check adapters/": fill_training_log,
}


def guide_commands(guide: Path = GUIDE) -> list[str]:
    """Every command of the guide's ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", guide.read_text(encoding="utf-8"), re.DOTALL):
        for command in block.replace("\\\n", " ").splitlines():
            command = " ".join(command.split("  #")[0].split())
            if command:
                commands.append(command)
    return commands


@dataclass
class Step:
    command: str
    exit_code: int
    seconds: float
    output: str
    peak_memory_mb: float  # the command's own peak resident memory (its process and none other)


def prepare(workdir: Path, library: Path) -> None:
    """A scratch clone: a copy of `library` as adapters/, links to this clone's scripts, templates and configs."""
    shutil.copytree(library, workdir / "adapters", symlinks=True)
    for name in ("scripts", "configs", ".github"):
        (workdir / name).symlink_to(ROOT / name)
    template = workdir / "locomlx" / "data" / "TRAINING_LOG_TEMPLATE.md"
    template.parent.mkdir(parents=True)
    shutil.copyfile(ROOT / "locomlx" / "data" / "TRAINING_LOG_TEMPLATE.md", template)


def run_command(command: str, workdir: Path, env: dict) -> Step:
    argv = shlex.split(command)
    bin_dir = Path(sys.executable).parent
    if argv[0] == "loco":
        argv[0] = str(bin_dir / "loco")
    elif argv[0] == "python":
        argv[0] = sys.executable
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read().decode("utf-8", errors="replace")
    peak = usage.ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else usage.ru_maxrss / 1024
    return Step(command, process.returncode, time.perf_counter() - start, output, peak)


def walk(workdir: Path, library: Path, env: dict | None = None, on_step=None, done: list[Step] = ()) -> list[Step]:
    """Run the guide in `workdir` on a copy of `library`; stops at the first command that fails. With `done` (the
    steps of a walk that was stopped in `workdir`), it goes on from the first command not among them."""
    if not done:
        prepare(workdir, library)
    env = dict(os.environ if env is None else env)
    steps = list(done)
    for command in guide_commands()[len(done):]:
        for start, action in BEFORE.items():
            if command.startswith(start):
                action(workdir)
        step = run_command(command, workdir, env)
        steps.append(step)
        if on_step:
            on_step(step)
        allowed = (0, EVALUATE_FAIL) if command.startswith("python scripts/evaluate.py") else (0,)
        if step.exit_code not in allowed:
            raise RuntimeError(f"`{command}` exited {step.exit_code}:\n{step.output[-3000:]}")
    return steps


_PRINTED = re.compile(r"^\[\s*([\d.]+) min,\s*(\d+) MB, exit (-?\d+)\] (.*)$")


def steps_from_log(text: str) -> list[Step]:
    """The steps a walk printed (its progress lines), to go on with a walk that was stopped."""
    return [Step(m.group(4), int(m.group(3)), float(m.group(1)) * 60, "", float(m.group(2)))
            for m in map(_PRINTED.match, text.splitlines()) if m]


def _report(steps: list[Step], workdir: Path, continued: int = 0) -> str:
    results = json.loads((workdir / "adapters" / DOMAIN / "eval" / "results.json").read_text())
    lines = ["# The contributing guide, walked on the real model", "",
             "Written by `python scripts/walk_guide.py`: every command of [CONTRIBUTING.md](../CONTRIBUTING.md), "
             "as written, on a copy of the shipped library with the embedded SmolLM2-135M, adding the domain "
             f"`{DOMAIN}` (past-tense rewrites, `exact_match_cased`).", "",
             "| command | exit | minutes | peak memory (MB) |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| `{s.command}` | {s.exit_code} | {s.seconds / 60:.1f} | {s.peak_memory_mb:.0f} |" for s in steps]
    lines += ["", f"Total {sum(s.seconds for s in steps) / 60:.1f} minutes. The new adapter: {results['metric']} "
              f"{results['adapter_score']:.3f} against the base model's {results['base_model_score']:.3f} "
              f"(p = {results['p_value']:.2g}), largest out-of-domain loss {results['ood_degradation']:.3f}: "
              f"{'PASS' if results['passed'] else 'FAIL'}.", "",
              f"Disk: the new adapter's folder {_megabytes(workdir / 'adapters' / DOMAIN):.0f} MB; the virtual "
              f"environment {_megabytes(Path(sys.prefix)):.0f} MB; the converted base model and answer caches "
              f"{_megabytes(_cache()):.0f} MB (`{str(_cache()).replace(str(Path.home()), '~')}`)."]
    if continued:
        lines += ["", "The walk ran in parts: it was stopped and went on with `--continue-from`; each command's "
                      "figures are from the part that ran it."]
    if steps[-1].output.strip():
        lines += ["", "The last command's output:", "", "```", steps[-1].output.strip(), "```"]
    return "\n".join(lines) + "\n"


def _megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def _cache() -> Path:
    return Path(os.environ.get("LOCOMLX_CACHE", Path.home() / ".cache" / "locomlx"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", default=str(ROOT / "adapters"), help="the library to copy [adapters/]")
    parser.add_argument("--workdir", default=None, help="scratch folder [a new temporary one]")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--out", default=str(ROOT / "docs" / "guide-walk.md"))
    parser.add_argument("--continue-from", metavar="LOG", help="go on with a walk that was stopped: LOG is what it "
                        "printed, --workdir the folder it ran in; the report keeps its steps' figures")
    args = parser.parse_args()
    done = steps_from_log(Path(args.continue_from).read_text(encoding="utf-8")) if args.continue_from else []
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="locomlx-guide-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        steps = walk(workdir, Path(args.library), done=done,
                     on_step=lambda s: print(f"[{s.seconds / 60:5.1f} min, {s.peak_memory_mb:5.0f} MB, exit "
                                             f"{s.exit_code}] {s.command}", flush=True))
        Path(args.out).write_text(_report(steps, workdir, len(done)), encoding="utf-8")
        print(f"wrote {args.out}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
