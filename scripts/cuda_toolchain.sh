#!/usr/bin/env bash
# Installs NVRTC and ptxas from PyPI wheels into a cache folder outside the repo, so the CUDA
# kernels can be compiled for every target architecture on a machine with no CUDA toolkit and no
# GPU. Idempotent: when the cache already holds the pinned version it only prints the paths.
# Prints shell `export` lines for CXR_NVRTC_DIR and CXR_PTXAS; callers `eval` them.
set -euo pipefail
VERSION="${CXR_CUDA_WHEEL_VERSION:-13.0.88}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/cxr/cuda/$VERSION"
STAMP="$CACHE/.installed"
if [[ ! -f "$STAMP" ]]; then
    mkdir -p "$CACHE"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$CACHE" \
        "nvidia-cuda-nvrtc==$VERSION" "nvidia-cuda-nvcc==$VERSION" >&2
    touch "$STAMP"
fi
NVRTC_LIB="$(dirname "$(find "$CACHE" -name 'libnvrtc.so*' ! -name '*builtins*' | head -n1)")"
PTXAS="$(find "$CACHE" -name ptxas -type f | head -n1)"
if [[ -z "$NVRTC_LIB" || -z "$PTXAS" ]]; then
    echo "cuda_toolchain: libnvrtc or ptxas missing under $CACHE (delete it to reinstall)" >&2
    exit 1
fi
chmod +x "$PTXAS"
echo "export CXR_NVRTC_DIR=$NVRTC_LIB"
echo "export CXR_PTXAS=$PTXAS"
