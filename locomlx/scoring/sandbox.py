"""Run model-written Python against tests in a contained child process (the `pass@1` metric).

Containment, in layers:
- a separate interpreter (`python -I`: no user site, no PYTHON* variables) in a fresh
  process group, in a throw-away working directory, with an empty environment;
- OS limits set before the code runs: CPU seconds, address space (memory), size of any
  file written (so a flood of output stops), open files, no core dumps;
- a wall-clock timeout after which the whole process group is killed;
- a Python audit hook, installed before the code runs and impossible to remove, that
  refuses new processes (fork, exec, spawn, os.system, subprocess), sockets, ctypes,
  reading files outside the working directory and Python's own library, and writing
  outside the working directory.
Output is read back from files capped in size. Anything that is not a clean exit 0
counts as a failure.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

MAX_OUTPUT_BYTES = 64 * 1024

_RUNNER = r'''
import os, resource, sys

work, cpu, memory, file_size, allowed_read = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                              sys.argv[5:])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
source = open(os.path.join(work, "program.py"), encoding="utf-8").read()
work = os.path.realpath(work)
readable = [os.path.realpath(p) for p in allowed_read] + [work]

BLOCKED = {"os.system", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
           "pty.spawn", "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "ctypes.dlopen",
           "ctypes.cdata", "sys.addaudithook", "os.kill", "os.killpg", "signal.pthread_kill", "os.chdir",
           "os.chmod", "os.chown", "os.link", "os.symlink", "shutil.rmtree", "os.remove", "os.rmdir", "os.rename",
           "os.truncate", "os.putenv", "os.unsetenv", "fcntl.ioctl", "mmap.__new__", "webbrowser.open"}

def inside(path, roots):
    try:
        real = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return any(real == r or real.startswith(r + os.sep) for r in roots)

def hook(event, args):
    if event in BLOCKED:
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event in ("os.listdir", "os.scandir") and args and args[0] is not None and not inside(args[0], readable):
        raise PermissionError(f"sandbox: listing {args[0]!r} is not allowed")
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        writing = any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        if not inside(args[0], [work] if writing else readable):
            raise PermissionError(f"sandbox: opening {args[0]!r} is not allowed")

sys.addaudithook(hook)
del hook
code = compile(source, "program.py", "exec")
exec(code, {"__name__": "__main__"})
'''


@dataclass
class SandboxResult:
    passed: bool
    status: str  # passed | failed | timeout | killed
    output: str


def _python_roots() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({paths["stdlib"], paths["platstdlib"], sys.base_prefix, os.path.dirname(sys.executable)})


def run_python(program: str, timeout: float = 10.0, memory_mb: int = 512, file_mb: int = 8) -> SandboxResult:
    """Run `program` contained; passed means it exited 0 within the limits."""
    with tempfile.TemporaryDirectory(prefix="locomlx-sandbox-") as work:
        Path(work, "program.py").write_text(program, encoding="utf-8")
        runner = Path(work, "runner.py")
        runner.write_text(_RUNNER, encoding="utf-8")
        out_path = Path(work, "output.txt")
        args = [sys.executable, "-I", "-B", str(runner), work, str(int(timeout) + 1), str(memory_mb << 20),
                str(file_mb << 20), *_python_roots()]
        with open(out_path, "wb") as out:
            process = subprocess.Popen(args, cwd=work, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            try:
                code = process.wait(timeout=timeout)
                status = "passed" if code == 0 else ("killed" if code < 0 else "failed")
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        with open(out_path, "rb") as f:
            output = f.read(MAX_OUTPUT_BYTES).decode("utf-8", errors="replace")
    return SandboxResult(status == "passed", status, output)


_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


_IMPORT = re.compile(r"^(?:from\s+\S+\s+import\s+.+|import\s+.+)$", re.MULTILINE)


def program_for(prompt: str, answer: str, tests: str) -> str:
    """The program to run: the answer's code (its first fenced block, if any), then the tests.

    An answer that only continues the prompt (completion style) runs after the prompt; one that writes
    whole functions runs after the prompt's imports, which models tend to leave out when they restate
    the function (`from typing import List`).
    """
    fenced = _FENCE.search(answer)
    code = fenced.group(1) if fenced else answer
    if re.search(r"^\s*def \w+", code, re.MULTILINE):
        body = "\n".join(_IMPORT.findall(prompt) + [code])
    else:
        body = prompt + code
    return f"{body}\n\n{tests}\n"
