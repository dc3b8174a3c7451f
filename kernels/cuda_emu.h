// CPU emulation of the CUDA execution model, so the kernels in this folder run unchanged on a host
// with no GPU (compiled by g++, this header first: see emu_exports.cpp). Two schedulers run the
// same kernel code:
//   - threads: every CUDA thread of a block is an OS thread and __syncthreads is a std::barrier.
//     Races between threads are real races, so -fsanitize=thread finds a missing __syncthreads and
//     -fsanitize=address finds out-of-bounds indexing. Used by the kernel property tests.
//   - fibers: every CUDA thread is a fiber on one OS thread (entered once through makecontext,
//     then switched with _setjmp/_longjmp, no system call per switch) and __syncthreads switches
//     to the next fiber. About 10x cheaper per thread and barrier than OS threads on this project's
//     machines, so a whole training step of a real model can run through the kernels. Same
//     results as the threads scheduler (fibers cannot race).
// Blocks of one launch run one after another, which is a legal CUDA schedule, and is why
// `__shared__` can be a function-level static: only one block of a kernel is alive at a time, and
// launches are serialised by a process-wide mutex.
#pragma once
// The fiber scheduler jumps between stacks with _longjmp, which glibc's fortified longjmp rejects
// ("longjmp causes uninitialized stack frame"); this header must come before any system header.
#undef _FORTIFY_SOURCE
#include <atomic>
#include <barrier>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>
#include <csetjmp>
#include <ucontext.h>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace cxr_emu {
inline thread_local dim3 thread_idx;
inline thread_local dim3 block_idx;
// Written before any emulated thread starts and read-only while a launch runs.
inline dim3 block_dim;
inline dim3 grid_dim;
inline bool use_fibers = false;
inline std::barrier<>* block_barrier = nullptr;

// Fiber scheduler state (one OS thread runs every fiber, so no synchronisation is needed).
struct Fiber {
    ucontext_t ctx;  // only to enter the fiber the first time (makecontext)
    std::jmp_buf resume;  // where the fiber continues after a __syncthreads
    std::vector<char> stack;
    dim3 idx;
    bool started = false;
    bool done = false;
};
inline std::vector<Fiber> fibers;
inline ucontext_t scheduler_ctx;
inline std::jmp_buf scheduler_jmp;
inline size_t current_fiber = 0;
inline const std::function<void()>* fiber_body = nullptr;

inline void sync_block() {
    if (use_fibers) {
        // _setjmp/_longjmp switch without touching the signal mask: swapcontext makes a system
        // call per switch, which cost ~100x more than the switch itself.
        if (_setjmp(fibers[current_fiber].resume) == 0) _longjmp(scheduler_jmp, 1);
    } else {
        block_barrier->arrive_and_wait();
    }
}

inline dim3 unflatten(unsigned i, dim3 d) {
    return dim3{i % d.x, (i / d.x) % d.y, i / (d.x * d.y)};
}

inline void fiber_entry() {
    (*fiber_body)();
    fibers[current_fiber].done = true;
    _longjmp(scheduler_jmp, 1);
}

// Points fiber t at the kernel body on its own stack (out of line for the same reason).
[[gnu::noinline]] inline void prepare_fiber(unsigned t) {
    Fiber& f = fibers[t];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = nullptr;
    f.done = false;
    f.started = false;
    makecontext(&f.ctx, fiber_entry, 0);
}

// Runs fiber t until its next __syncthreads or its end. Kept out of line: swapcontext returns
// twice, and locals of the function calling it must not live across it in registers.
// The first entry goes through swapcontext (a fresh stack); later ones jump back into the fiber.
[[gnu::noinline]] inline void resume_fiber(unsigned t) {
    current_fiber = t;
    thread_idx = fibers[t].idx;
    if (_setjmp(scheduler_jmp) != 0) return;
    Fiber& f = fibers[t];
    if (!f.started) {
        f.started = true;
        swapcontext(&scheduler_ctx, &f.ctx);
    } else {
        _longjmp(f.resume, 1);
    }
}

// Runs one block: each barrier phase resumes every live fiber once, in thread order.
inline void run_block_fibers(unsigned threads) {
    for (unsigned t = 0; t < threads; ++t) prepare_fiber(t);
    bool live = true;
    while (live) {
        live = false;
        for (unsigned t = 0; t < threads; ++t) {
            if (fibers[t].done) continue;
            resume_fiber(t);
            live = live || !fibers[t].done;
        }
    }
}

inline int launch_fibers(unsigned threads, unsigned blocks, const std::function<void()>& body) {
    constexpr size_t kStack = 64 * 1024;
    if (fibers.size() < threads) fibers.resize(threads);
    for (unsigned t = 0; t < threads; ++t) {
        fibers[t].idx = unflatten(t, block_dim);
        if (fibers[t].stack.size() < kStack) fibers[t].stack.resize(kStack);
    }
    fiber_body = &body;
    for (unsigned b = 0; b < blocks; ++b) {
        block_idx = unflatten(b, grid_dim);
        run_block_fibers(threads);
    }
    return 0;
}

inline int launch_threads(unsigned threads, unsigned blocks, const std::function<void()>& body) {
    std::barrier<> barrier(threads);
    block_barrier = &barrier;
    std::vector<std::thread> team;
    try {
        for (unsigned t = 0; t < threads; ++t) {
            team.emplace_back([&, t] {
                thread_idx = unflatten(t, block_dim);
                for (unsigned b = 0; b < blocks; ++b) {
                    block_idx = unflatten(b, grid_dim);
                    body();
                    // Block b's shared memory is dead only once every thread has finished it.
                    barrier.arrive_and_wait();
                }
            });
        }
    } catch (...) {
        // Could not start every thread: the started ones would wait forever at the barrier.
        std::terminate();
    }
    for (auto& th : team) th.join();
    return 0;
}

inline std::mutex& launch_mutex() {
    static std::mutex m;
    return m;
}

inline int launch(dim3 grid, dim3 block, const std::function<void()>& body) {
    std::lock_guard<std::mutex> lock(launch_mutex());
    unsigned threads = block.x * block.y * block.z;
    unsigned blocks = grid.x * grid.y * grid.z;
    if (threads == 0 || threads > 1024 || blocks == 0) return 1;
    block_dim = block;
    grid_dim = grid;
    return use_fibers ? launch_fibers(threads, blocks, body) : launch_threads(threads, blocks, body);
}

// Calls kernel k with its parameters read from args[i], as cuLaunchKernel's kernelParams.
template <typename... A, size_t... I>
void call_with(void (*k)(A...), void** args, std::index_sequence<I...>) {
    k(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}

template <typename... A>
int launch_kernel(void (*k)(A...), const unsigned* grid, const unsigned* block, void** args) {
    std::function<void()> body = [&] { call_with(k, args, std::index_sequence_for<A...>{}); };
    return launch(dim3{grid[0], grid[1], grid[2]}, dim3{block[0], block[1], block[2]}, body);
}
}  // namespace cxr_emu

#define threadIdx (cxr_emu::thread_idx)
#define blockIdx (cxr_emu::block_idx)
#define blockDim (cxr_emu::block_dim)
#define gridDim (cxr_emu::grid_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static
inline void __syncthreads() { cxr_emu::sync_block(); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
using std::max;
using std::min;
using std::isfinite;
using std::isnan;
inline float __int_as_float(int bits) { return std::bit_cast<float>(bits); }
