"""The trusted runner inside the pass@1 sandbox (see sandbox.py): stdlib only, run as `python -I -S -B`.

    runner.py WORK VERDICT_FD CPU_SECONDS MEMORY_BYTES FILE_BYTES PROCESSES tests|cases [READABLE_ROOT ...]

It forks the candidate child before any model-written code runs, then runs the trusted tests (or visible
cases) itself, calling the child's functions through proxies, and alone writes the verdict to VERDICT_FD.
"""

import ast
import marshal
import os
import resource
import struct
import sys
import traceback

MAX_FRAME = 16 << 20
PLAIN = (int, float, complex, str, bytes, bool, type(None), list, tuple, dict, set, frozenset)


class CandidateError(Exception):
    """A call into the candidate's code failed (it raised, exited, or returned something not plain data)."""


def send(fd, message):
    data = marshal.dumps(message)
    os.write(fd, struct.pack(">I", len(data)))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def receive(fd):
    header = _read_exactly(fd, 4)
    (size,) = struct.unpack(">I", header)
    if size > MAX_FRAME:
        raise CandidateError(f"the candidate sent {size} bytes, over the {MAX_FRAME}-byte limit")
    return marshal.loads(_read_exactly(fd, size))


def _read_exactly(fd, size):
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise CandidateError("the candidate's process ended (it exited or crashed)")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def plain(value, depth=0):
    """Whether `value` is plain data all the way down (exact builtin types: no subclasses, no custom __eq__)."""
    if depth > 100 or type(value) not in PLAIN:
        return False
    if type(value) in (list, tuple, set, frozenset):
        return all(plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(plain(k, depth + 1) and plain(v, depth + 1) for k, v in value.items())
    return True


def set_limits(cpu, memory, file_size, processes):
    limits = [(resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, file_size),
              (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CORE, 0)]
    if processes:  # 0: not in a user namespace of its own, where the limit would count all the user's processes
        limits.append((resource.RLIMIT_NPROC, processes))
    for limit, value in limits:
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            pass


def install_hook(work, readable):
    """The second layer: refuse processes, sockets, ctypes and files outside the work folder (and, unisolated,
    reading outside the interpreter's own files). Its state lives in this closure, not in a module."""
    blocked = frozenset({
        "os.system", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
        "pty.spawn", "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "ctypes.dlopen",
        "ctypes.dlsym", "ctypes.cdata", "sys.addaudithook", "os.kill", "os.killpg", "signal.pthread_kill",
        "os.chdir", "os.chmod", "os.chown", "os.link", "os.symlink", "shutil.rmtree", "os.remove", "os.rmdir",
        "os.rename", "os.truncate", "os.putenv", "os.unsetenv", "fcntl.ioctl", "mmap.__new__", "webbrowser.open",
        "os.mkdir", "os.utime", "_thread.start_new_thread", "sys.settrace", "sys.setprofile", "os.setxattr",
        "os.removexattr", "resource.setrlimit", "resource.prlimit", "gc.get_referrers", "gc.get_objects",
        "sys._current_frames", "sys.remote_exec", "os.startfile", "winreg.OpenKey"})
    roots = tuple(readable) + (work,)
    realpath, sep, fsdecode = os.path.realpath, os.sep, os.fsdecode
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def inside(path, allowed):
        try:
            real = realpath(fsdecode(path))
        except Exception:
            return False
        return any(real == r or real.startswith(r + sep) for r in allowed)

    def hook(event, args):
        if event in blocked:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event in ("os.listdir", "os.scandir") and args and args[0] is not None and not inside(args[0], roots):
            raise PermissionError(f"sandbox: listing {args[0]!r} is not allowed")
        if event == "open" and args:
            path = args[0]
            if isinstance(path, int):
                raise PermissionError("sandbox: opening a file descriptor is not allowed")
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            writing = any(c in mode for c in "wax+") or bool(flags & write_flags)
            if not inside(path, (work,) if writing else roots):
                raise PermissionError(f"sandbox: opening {path!r} is not allowed")

    sys.addaudithook(hook)


def serve_candidate(work, calls, results, readable):
    """The child: run the candidate, report the functions it defined, then answer calls until the pipe closes."""
    install_hook(work, readable)
    namespace = {"__name__": "__main__"}
    try:
        with open(os.path.join(work, "candidate.py"), encoding="utf-8") as f:
            source = f.read()
        exec(compile(source, "candidate.py", "exec"), namespace)
    except BaseException:  # noqa: BLE001 - whatever the candidate raises, SystemExit included, is its failure
        send(results, ("error", traceback.format_exc(limit=5)))
        return
    names = [n for n, v in namespace.items() if callable(v) and not n.startswith("__")]
    send(results, ("ready", names))
    while True:
        try:
            message = receive(calls)
        except CandidateError:
            return
        _, name, args, kwargs = message
        try:
            value = namespace[name](*args, **kwargs)
            reply = ("ok", value) if plain(value) else (
                "raise", f"returned a {type(value).__name__}, not plain data (numbers, strings, containers)")
        except BaseException as exc:  # noqa: BLE001
            reply = ("raise", f"{type(exc).__name__}: {exc}")
        try:
            send(results, reply)
        except (ValueError, OverflowError):
            send(results, ("raise", "the result cannot be sent back (too large or too deep)"))


def proxy(name, calls, results):
    def call(*args, **kwargs):
        if not plain(args) or not plain(kwargs):
            raise CandidateError(f"{name}() was called with arguments that are not plain data")
        send(calls, ("call", name, args, kwargs))
        kind, value = receive(results)
        if kind != "ok" or not plain(value):
            raise CandidateError(f"{name}() {value if kind == 'raise' else 'sent something that is not plain data'}")
        return value

    call.__name__ = name
    return call


def main():
    work, verdict_fd = os.path.realpath(sys.argv[1]), int(sys.argv[2])
    cpu, memory, file_size, processes = (int(v) for v in sys.argv[3:7])
    mode, readable = sys.argv[7], [os.path.realpath(p) for p in sys.argv[8:]]
    set_limits(cpu, memory, file_size, processes)
    calls_read, calls_write = os.pipe()
    results_read, results_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the candidate's child: it never holds the verdict channel
        os.close(verdict_fd)
        os.close(calls_write)
        os.close(results_read)
        try:
            serve_candidate(work, calls_read, results_write, readable)
        finally:
            os._exit(0)
    os.close(calls_read)
    os.close(results_write)
    verdict = "FAIL"
    try:
        kind, value = receive(results_read)
        if kind != "ready" or not plain(value):
            raise CandidateError(f"the candidate's code failed:\n{value}")
        namespace = {"__name__": "__main__"}
        with open(os.path.join(work, "setup.py"), encoding="utf-8") as f:
            setup = f.read()
        try:
            exec(compile(setup, "prompt.py", "exec"), namespace)
        except Exception:  # noqa: BLE001 - a prompt that is not runnable on its own defines nothing
            namespace = {"__name__": "__main__"}
        namespace.update({n: proxy(n, calls_write, results_read) for n in value if isinstance(n, str)})
        if mode == "cases":
            with open(os.path.join(work, "cases.txt"), encoding="utf-8") as f:
                cases = ast.literal_eval(f.read())
            passed = 0
            for call, expected in cases:
                try:
                    got = eval(call, namespace)
                    try:
                        ok = got == eval(expected, namespace)
                    except Exception:  # noqa: BLE001 - an expected value that is not an expression: compare reprs
                        ok = repr(got) == expected
                    passed += bool(ok)
                except Exception:  # noqa: BLE001
                    pass
            verdict = f"COUNT {passed}"
        else:
            with open(os.path.join(work, "tests.py"), encoding="utf-8") as f:
                tests = f.read()
            exec(compile(tests, "tests.py", "exec"), namespace)
            verdict = "PASS"
    except BaseException:  # noqa: BLE001 - a failing test, a failed call or a crash: the verdict stays FAIL
        traceback.print_exc(limit=3)
    finally:
        os.close(calls_write)
    os.write(verdict_fd, verdict.encode())
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
