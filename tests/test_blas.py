"""CBLAS preloading: found and loaded before mlx.core, skipped on request, warned about when too late."""

import subprocess
import sys

from locomlx import blas

import pytest


def _run(code, **env):
    base = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**base, **env})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CBLAS preload is for Linux CPUs")
def test_an_optimized_cblas_is_loaded_in_this_test_run():
    status = blas.preload()
    assert status.path, f"no CBLAS loaded: {status.reason}; {blas.INSTALL_HINT}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CBLAS preload is for Linux CPUs")
def test_loaded_library_is_the_one_mlx_calls():
    """After import locomlx, the process's cblas_sgemm comes from the preloaded library, not MLX's bundled one."""
    code = (
        "import locomlx, ctypes\n"
        "from locomlx import blas\n"
        "import mlx.core as mx\n"
        "libc = ctypes.CDLL(None)\n"
        "class Info(ctypes.Structure):\n"
        "    _fields_ = [('fname', ctypes.c_char_p), ('fbase', ctypes.c_void_p), "
        "('sname', ctypes.c_char_p), ('saddr', ctypes.c_void_p)]\n"
        "info = Info()\n"
        "addr = ctypes.cast(libc.cblas_sgemm, ctypes.c_void_p)\n"
        "libc.dladdr(addr, ctypes.byref(info))\n"
        "print(info.fname.decode(), blas.preload().path)\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    provider, preloaded = out.stdout.split()
    assert "mlx" not in provider.lower()
    assert provider.rsplit("/", 1)[-1].split(".so")[0] == preloaded.rsplit("/", 1)[-1].split(".so")[0]


@pytest.mark.skipif("mkl" not in str(blas.preload().path), reason="MKL is not the preloaded BLAS")
def test_mkl_runs_on_the_gnu_openmp_team_the_kernels_use():
    """MKL on Intel's OpenMP would keep a second team of threads spinning on the cores the kernels' team needs."""
    code = (
        "import locomlx\n"
        "import mlx.core as mx\n"
        "a = mx.ones((256, 256))\n"
        "mx.eval(a @ a)\n"
        "maps = open('/proc/self/maps').read()\n"
        "print('libmkl_gnu_thread' in maps, 'libiomp5' in maps)\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]
    # a layer the user chose is kept
    assert _run(code, MKL_THREADING_LAYER="INTEL").stdout.split() == ["False", "True"]


def test_env_none_disables():
    out = _run("import locomlx; from locomlx import blas; print(blas.preload())", LOCOMLX_BLAS="none")
    assert "disabled by LOCOMLX_BLAS=none" in out.stdout


def test_bad_env_path_warns_but_does_not_fail():
    out = _run("import locomlx; print('imported')", LOCOMLX_BLAS="/nonexistent/libfoo.so")
    assert out.returncode == 0 and "imported" in out.stdout
    assert "could not be loaded or does not export cblas_sgemm" in out.stderr


def test_mlx_imported_first_warns():
    out = _run("import mlx.core; import locomlx; print('imported')")
    assert out.returncode == 0 and "imported" in out.stdout
    assert "mlx.core was imported before locomlx" in out.stderr
