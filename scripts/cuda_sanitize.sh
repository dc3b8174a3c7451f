#!/usr/bin/env bash
# Runs the emulated CUDA kernel tests twice with the kernels instrumented: once under
# ThreadSanitizer (each emulated CUDA thread is an OS thread, so a missing __syncthreads is a real
# data race) and once under AddressSanitizer (out-of-bounds indexing in a kernel). The Rust side
# is not instrumented; the sanitizer runtime is linked in by build.rs (CXR_EMU_SANITIZE).
# Usage: scripts/cuda_sanitize.sh [thread|address]...   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
kinds=("$@")
[[ ${#kinds[@]} -eq 0 ]] && kinds=(thread address)
for kind in "${kinds[@]}"; do
    echo "== emulated CUDA kernels under -fsanitize=$kind"
    export CXR_EMU_SANITIZE="$kind"
    case "$kind" in
        thread) export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 report_signal_unsafe=0 suppressions=$PWD/scripts/tsan.supp" ;;
        address) export ASAN_OPTIONS="detect_leaks=0 verify_asan_link_order=0 halt_on_error=1" ;;
        *) echo "unknown sanitizer $kind" >&2; exit 2 ;;
    esac
    # One test thread and one rayon worker: the emulator serialises launches anyway, and fewer
    # uninstrumented Rust threads means fewer hand-offs TSan cannot see.
    export RAYON_NUM_THREADS=1
    cargo test --features cuda-emu --test cuda_kernels -- --test-threads=1
done
unset CXR_EMU_SANITIZE
echo "sanitizers: no findings"
