"""Run model-written Python against a benchmark's tests, isolated by the operating system (the `pass@1` metric).

The wall is the operating system, not Python:
- on Linux, bubblewrap (`bwrap`, Debian's `bubblewrap`): new user, PID, network, IPC and mount
  namespaces; the filesystem is a read-only view of the interpreter's own prefix and the system
  libraries, a fresh writable work folder and an empty /tmp, nothing else of the host; no network;
  no capabilities; the process dies with its parent. Running as root does not matter: inside, the
  code is user 65534 with no capabilities over anything outside.
- on macOS, `sandbox-exec` with a deny-by-default profile (file reads of the interpreter and system
  libraries, writes to the work folder only, no network).
- in both, rlimits on CPU time, memory, file size, open files and processes; where a writable cgroup
  `pids` controller exists (root on Linux), a cgroup caps the number of processes too, which the
  rlimit cannot do for root (the kernel exempts processes that are root outside the namespace);
  at the timeout the whole process group is killed.
A Python audit hook (no processes, sockets, ctypes, files outside the work folder) is a second layer.
When no isolation mechanism is found, `run_tests` refuses unless the caller allows unisolated runs
(`--allow-unisolated-code`, or LOCOMLX_ALLOW_UNISOLATED_CODE=1).

The verdict cannot be forged by the program. Inside the sandbox a trusted runner forks a child
*before* any model-written code runs; the child closes the verdict channel, then runs the candidate
and serves calls to the functions it defined. The runner executes the tests itself, in its own
interpreter, with each candidate function replaced by a proxy that calls the child over a pipe and
receives the result as plain data (marshal: numbers, strings, bytes, None and containers of them).
So an early exit or exit hook in the child only makes the calls fail; an always-equal object cannot
cross the pipe; printed text goes to the log, never to the verdict; and the count of visible tests
passed (used to vote among code samples) is computed and written by the runner alone.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from locomlx.errors import LocomlxError

MAX_OUTPUT_BYTES = 64 * 1024
ALLOW_ENV = "LOCOMLX_ALLOW_UNISOLATED_CODE"
MAX_PROCESSES = 16
RUNNER = Path(__file__).with_name("sandbox_runner.py")


@dataclass
class SandboxResult:
    passed: bool
    status: str  # passed | failed | timeout | killed
    output: str
    visible_passed: int = 0  # with `cases`: how many the runner counted as passed


@functools.lru_cache(maxsize=None)
def isolation() -> str | None:
    """'bubblewrap', 'sandbox-exec' or None: the OS mechanism that works on this machine (probed once)."""
    if sys.platform == "darwin" and shutil.which("sandbox-exec"):
        return "sandbox-exec"
    if sys.platform.startswith("linux") and shutil.which("bwrap"):
        with tempfile.TemporaryDirectory(prefix="locomlx-probe-") as work:
            probe = _bwrap_command(Path(work)) + [_interpreter(), "-I", "-S", "-c", "pass"]
            try:
                if subprocess.run(probe, capture_output=True, timeout=30).returncode == 0:
                    return "bubblewrap"
            except (OSError, subprocess.TimeoutExpired):
                pass
    return None


def check_isolation(allow_unisolated: bool = False) -> str | None:
    """The isolation to use, or an error that says how to get one (or how to opt out knowingly)."""
    found = isolation()
    if found is None and not (allow_unisolated or os.environ.get(ALLOW_ENV) == "1"):
        hint = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; scripts/setup.sh does it)"
                if sys.platform.startswith("linux") else "sandbox-exec ships with macOS; it was not found")
        raise LocomlxError(
            f"pass@1 runs model-written code, and no sandbox was found on this machine ({platform.system()}): "
            f"{hint}. To run the code without isolation anyway (only audit hooks and rlimits between it and "
            f"your files), pass --allow-unisolated-code or set {ALLOW_ENV}=1.")
    return found


def _interpreter() -> str:
    """The base interpreter (not a venv's shim): the sandbox shows its prefix only, and the candidate sees the
    standard library alone."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def _system_roots() -> list[str]:
    prefix = os.path.realpath(sys.base_prefix)
    return sorted({prefix, os.path.dirname(_interpreter())})


def _bwrap_command(work: Path) -> list[str]:
    command = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
               "--uid", "65534", "--gid", "65534", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
               "--setenv", "LANG", "C.UTF-8", "--ro-bind", "/usr", "/usr"]
    for link in ("bin", "lib", "lib32", "lib64", "sbin"):
        target = Path("/") / link
        if target.is_symlink():
            command += ["--symlink", os.readlink(target), str(target)]
        elif target.is_dir():
            command += ["--ro-bind", str(target), str(target)]
    for root in _system_roots():
        if not root.startswith("/usr/"):
            command += ["--ro-bind", root, root]
    return command + ["--bind", str(work), "/work", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
                      "--chdir", "/work"]


def _seatbelt_profile(work: Path) -> str:
    reads = " ".join(f'(subpath "{p}")' for p in [*_system_roots(), "/usr/lib", "/System", "/Library/Frameworks",
                                                  "/private/var/db/dyld", "/dev"])
    return ("(version 1)\n(deny default)\n(allow process-fork)\n(allow process-exec)\n(allow signal (target self))\n"
            f"(allow file-read* {reads} (subpath \"{work}\"))\n(allow file-write* (subpath \"{work}\") "
            "(literal \"/dev/null\"))\n(allow sysctl-read)\n(allow mach-lookup)\n")


class _PidsCgroup:
    """A cgroup (v1 `pids` or v2) capping the sandbox's processes, where this process may create one."""

    ROOTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))

    def __init__(self, limit: int):
        self.path = None
        for root in self.ROOTS:
            if (root / "cgroup.procs").exists() and os.access(root, os.W_OK):
                path = root / f"locomlx-sandbox-{secrets.token_hex(6)}"
                try:
                    path.mkdir()
                    (path / "pids.max").write_text(str(limit))
                    self.path = path
                    return
                except OSError:
                    if path.is_dir():
                        path.rmdir()

    def join(self) -> None:
        """Move the calling process in (run in the child before exec, so nothing it starts escapes the cap)."""
        with open(self.path / "cgroup.procs", "w") as procs:
            procs.write(str(os.getpid()))

    def remove(self) -> None:
        """Delete the cgroup once its killed processes are gone (the kernel refuses while any remain)."""
        for _ in range(50):
            if self.path is None:
                return
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.02)


def run_tests(code: str, tests: str = "", setup: str = "", cases: list[tuple[str, str]] | None = None,
              timeout: float = 10.0, memory_mb: int = 512, file_mb: int = 8,
              allow_unisolated: bool = False) -> SandboxResult:
    """Run the model's `code`, then the trusted `tests` against it (or count the visible `cases`:
    (call, expected) pairs); passed means the runner saw every test pass within the limits.

    `setup` is trusted code from the benchmark (the prompt: helper functions and imports) that the tests
    may use; the runner runs it before the tests, and the candidate's functions replace its definitions.
    """
    mechanism = check_isolation(allow_unisolated)
    with tempfile.TemporaryDirectory(prefix="locomlx-sandbox-") as folder:
        work = Path(folder)
        for name, text in (("candidate.py", code), ("tests.py", tests), ("setup.py", setup),
                           ("cases.txt", repr(cases) if cases is not None else "")):
            (work / name).write_text(text, encoding="utf-8")
        shutil.copy(RUNNER, work / "runner.py")
        os.chmod(work, 0o777)  # user 65534 inside the namespace writes here
        inside = "/work" if mechanism == "bubblewrap" else str(work)
        verdict_read, verdict_write = os.pipe()
        # RLIMIT_NPROC counts all the user's processes outside a user namespace: only bubblewrap gets it.
        processes = MAX_PROCESSES if mechanism == "bubblewrap" else 0
        limits = [str(int(timeout) + 1), str(memory_mb << 20), str(file_mb << 20), str(processes)]
        argv = [_interpreter(), "-I", "-S", "-B", f"{inside}/runner.py", inside, str(verdict_write), *limits,
                "cases" if cases is not None else "tests", *_system_roots()]
        if mechanism == "bubblewrap":
            argv = _bwrap_command(work) + argv
        elif mechanism == "sandbox-exec":
            argv = ["sandbox-exec", "-p", _seatbelt_profile(work), *argv]
        cgroup = _PidsCgroup(MAX_PROCESSES + 4)
        out_path = work / "output.txt"
        try:
            with open(out_path, "wb") as out:
                process = subprocess.Popen(argv, cwd=work, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                                           stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True, pass_fds=(verdict_write,),
                                           preexec_fn=cgroup.join if cgroup.path else None)
                os.close(verdict_write)
                try:
                    code_ = process.wait(timeout=timeout)
                    status = None if code_ == 0 else ("killed" if code_ < 0 else "failed")
                except subprocess.TimeoutExpired:
                    status = "timeout"
                finally:
                    try:
                        os.killpg(process.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                    process.wait()
            verdict = _read_verdict(verdict_read)
        finally:
            os.close(verdict_read)
            cgroup.remove()
        with open(out_path, "rb") as f:
            output = f.read(MAX_OUTPUT_BYTES).decode("utf-8", errors="replace")
    counted = int(verdict[6:]) if verdict.startswith("COUNT ") and verdict[6:].isdigit() else 0
    if status is None:
        status = "passed" if verdict == "PASS" or (cases is not None and verdict.startswith("COUNT ")) else "failed"
    return SandboxResult(status == "passed", status, output, counted)


def _read_verdict(fd: int) -> str:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 64).decode("ascii", errors="replace").strip()
    except BlockingIOError:
        return ""


_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)
_IMPORT = re.compile(r"^(?:from\s+\S+\s+import\s+.+|import\s+.+)$", re.MULTILINE)


def answer_code(prompt: str, answer: str) -> str:
    """The candidate program: the answer's code (its first fenced block, if any).

    An answer that only continues the prompt (completion style) runs after the prompt; one that writes
    whole functions runs after the prompt's imports, which models tend to leave out when they restate
    the function (`from typing import List`).
    """
    fenced = _FENCE.search(answer)
    code = fenced.group(1) if fenced else answer
    if re.search(r"^\s*def \w+", code, re.MULTILINE):
        return "\n".join(_IMPORT.findall(prompt) + [code]) + "\n"
    return prompt + code + "\n"
