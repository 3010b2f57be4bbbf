"""Build the CPU kernels (`_kernels`: qgemv.cpp, attention.cpp, swiglu.cpp, softmax.cpp) against the installed MLX.

    python -m locomlx.models.kernels.build        # scripts/setup.sh runs this; needs cmake, a C++20 compiler, nanobind

The kernels are compiled on the machine that uses them, like llama.cpp's, so they match the installed MLX's
headers and nanobind ABI exactly. Without them locomlx decodes on float32 weights and attends to prompts with
MLX's ops (correct, slower).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def built_library() -> Path | None:
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    path = HERE / f"_kernels{suffix}"
    return path if path.is_file() else None


def build(verbose: bool = False) -> Path:
    # The [kernel] extra's cmake sits next to this Python, which need not be on PATH.
    cmake = shutil.which("cmake", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if cmake is None:
        raise SystemExit("cmake not found: pip install 'locomlx[kernel]' (or apt-get install cmake) and run again.")
    output = None if verbose else subprocess.DEVNULL
    with tempfile.TemporaryDirectory(prefix="locomlx-kernels-") as tmp:
        subprocess.run([cmake, "-S", str(HERE), "-B", tmp, f"-DPython_EXECUTABLE={sys.executable}",
                        "-DCMAKE_BUILD_TYPE=Release"], check=True, stdout=output)
        subprocess.run([cmake, "--build", tmp, "--parallel", "2"], check=True, stdout=output)
        built = next(Path(tmp).glob("_kernels*.so"))
        target = HERE / built.name
        partial = target.with_suffix(".partial")
        shutil.copy2(built, partial)
        partial.replace(target)  # never a half-written library where Python imports it
    return target


if __name__ == "__main__":
    print(f"built {build(verbose='-v' in sys.argv)}")
