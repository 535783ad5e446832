// The CUDA layer of cuda_kernels.cu: the real CUDA runtime under nvcc, an emulation of it on
// the CPU under a C++ compiler, so the same source runs in CI where there is no GPU.
//
// The file uses CUDA only through what this header defines in both builds:
//   MS_LAUNCH(kernel, grid, block, shared_bytes, stream, args...)   a kernel launch
//   MS_DYNAMIC_SHARED(T, name)   `extern __shared__ T name[]`, the block's dynamic shared memory
//   megastep_cuda::StreamCtx     the XLA FFI context a handler's cudaStream_t is bound with
//   megastep_cuda::ScratchCtx, Scratch   the XLA FFI context for global scratch memory, and the
//                                handler's argument type (Allocate(bytes, alignment))
//   megastep_cuda::kMaxDynamicShared, kMaxThreadsPerBlock, kMaxGridX   CUDA's launch limits
// plus __global__, __device__, blockIdx, threadIdx, blockDim, gridDim, __syncthreads,
// __syncthreads_or, atomicOr and atomicAdd (int),
// cudaStream_t, cudaError_t, cudaGetLastError and cudaGetErrorString.
//
// The emulation (no __CUDACC__):
// - A launch runs every block of the grid, one block after another. The threads of a block
//   run concurrently, one std::thread each (thread 0 is the launching thread), created once
//   per launch and reused for every block. blockIdx, threadIdx, blockDim and gridDim are
//   thread-local to each emulated thread.
// - __syncthreads() is a real barrier across the threads of the block; __syncthreads_or(p)
//   the same barrier, returning to every thread whether any thread's p was non-zero. A
//   block whose threads
//   do not all reach the same barrier (some at __syncthreads, others at the end of the
//   kernel) aborts the launch with cudaErrorLaunchFailure instead of hanging.
// - Dynamic shared memory is one heap buffer of exactly `shared_bytes` (so AddressSanitizer
//   sees any access past it), filled with 0xff bytes (NaN as float, -1 as int) before every
//   block: a thread that reads it before another thread's write is made visible by a
//   barrier reads NaN, not a stale or zero value.
// - Launch configurations are checked against CUDA's limits (1,024 threads per block, 1,024
//   x 1,024 x 64 per axis, grid 2^31-1 x 65,535 x 65,535, 48 KB of dynamic shared memory, no
//   empty grid or block). Past them the kernel does not run and the error is returned by
//   the next cudaGetLastError(), as CUDA does; cudaGetErrorString() then says which limit.
// - Streams are ignored (launches are synchronous) and device pointers are host pointers.
// - Like the CUDA runtime, the last error is per host thread (thread_local here).
// - Static `__shared__` arrays are not emulated: use MS_DYNAMIC_SHARED.
#pragma once

#include <cstddef>
#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace megastep_cuda {
// CUDA's limits for every device of compute capability 3.5 and above.
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int64_t kMaxGridX = 2147483647;  // 2^31 - 1
constexpr int64_t kMaxGridYZ = 65535;
// Dynamic shared memory a launch may use without cudaFuncSetAttribute's opt-in.
constexpr size_t kMaxDynamicShared = 48 * 1024;
}  // namespace megastep_cuda

#if defined(__CUDACC__)
// ---------------------------------------------------------------------------------------
// nvcc: the real thing.
#include <cuda_runtime.h>

#define MS_LAUNCH(kernel, grid, block, shared, stream, ...) \
  kernel<<<(grid), (block), (shared), (stream)>>>(__VA_ARGS__)
#define MS_DYNAMIC_SHARED(T, name) extern __shared__ T name[]

namespace megastep_cuda {
using StreamCtx = xla::ffi::PlatformStream<cudaStream_t>;
using ScratchCtx = xla::ffi::ScratchAllocator;  // XLA's device memory, freed after the call
using Scratch = xla::ffi::ScratchAllocator;
}  // namespace megastep_cuda

#else
// ---------------------------------------------------------------------------------------
// The C++ compiler: an emulation on the CPU.
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define MEGASTEP_CUDA_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct CUstream_st;
using cudaStream_t = CUstream_st*;

// The codes CUDA gives these errors.
enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};

namespace megastep_cuda {
namespace emulation {

class BlockBarrier;

// The built-in variables and the block's resources, per emulated thread.
struct ThreadState {
  uint3 block_idx, thread_idx;
  dim3 block_dim, grid_dim;
  BlockBarrier* barrier = nullptr;
  unsigned char* shared = nullptr;
};
inline thread_local ThreadState tls;

// The CUDA runtime's per-host-thread error state.
struct LastError {
  cudaError_t code = cudaSuccess;
  std::string message;
};
inline thread_local LastError last_error;

inline void set_error(cudaError_t code, std::string message) {
  last_error.code = code;
  last_error.message = std::move(message);
}

// A reusable barrier across the n threads of a block. Every arrival says where it is: at a
// __syncthreads or at the end of the block. When the last thread arrives, an end-of-block
// phase runs `on_block_end` (with every other thread waiting); a phase mixing the two kinds
// is a divergent __syncthreads and aborts the launch. Once aborted, waits return at once
// so every thread can run out of its kernel and the launch can report the error.
class BlockBarrier {
 public:
  enum Kind { kSync = 0, kBlockEnd = 1 };

  BlockBarrier(int n, std::function<void()> on_block_end)
      : n_(n), on_block_end_(std::move(on_block_end)) {}

  // Returns whether any thread of this phase arrived with a non-zero `predicate` (the
  // result stays readable until every thread has left: the next phase needs them all).
  bool arrive_and_wait(Kind kind, int predicate = 0) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (aborted_) return false;
    ++arrived_[kind];
    any_ |= predicate != 0;
    if (arrived_[kSync] + arrived_[kBlockEnd] == n_) {
      result_ = any_;
      any_ = false;
      if (arrived_[kSync] && arrived_[kBlockEnd]) {
        aborted_ = true;
        error_ = "__syncthreads() reached by " + std::to_string(arrived_[kSync]) + " of the " +
                 std::to_string(n_) + " threads of block " + std::to_string(block_) +
                 ", the others having returned (a divergent barrier)";
      } else if (arrived_[kBlockEnd]) {
        ++block_;
        on_block_end_();
      }
      arrived_[kSync] = arrived_[kBlockEnd] = 0;
      ++generation_;
      cv_.notify_all();
      return result_;
    }
    uint64_t generation = generation_;
    cv_.wait(lock, [&] { return generation_ != generation || aborted_; });
    return aborted_ ? false : result_;
  }

  // Ends the launch early: every wait returns, block() says there is nothing left to run.
  void abort(std::string why) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!aborted_) error_ = std::move(why);
    aborted_ = true;
    cv_.notify_all();
  }

  // The block the threads are in; read after a barrier, written only by its last arrival.
  uint64_t block() {
    std::lock_guard<std::mutex> lock(mutex_);
    return aborted_ ? UINT64_MAX : block_;
  }
  std::string error() {
    std::lock_guard<std::mutex> lock(mutex_);
    return error_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  const int n_;
  int arrived_[2] = {0, 0};
  uint64_t generation_ = 0;
  uint64_t block_ = 0;
  bool aborted_ = false;
  bool any_ = false, result_ = false;
  std::string error_;
  std::function<void()> on_block_end_;
};

// "" or why CUDA would refuse this launch configuration, with the error it would give.
inline std::string check_launch(dim3 grid, dim3 block, size_t shared, cudaError_t& code) {
  code = cudaErrorInvalidConfiguration;
  auto str = [](dim3 d) {
    return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
  };
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return "empty grid " + str(grid);
  if (block.x == 0 || block.y == 0 || block.z == 0) return "empty block " + str(block);
  if (grid.x > (uint64_t)kMaxGridX || grid.y > (uint64_t)kMaxGridYZ || grid.z > (uint64_t)kMaxGridYZ)
    return "grid " + str(grid) + " past CUDA's limits (2147483647, 65535, 65535)";
  if (block.x > 1024 || block.y > 1024 || block.z > 64)
    return "block " + str(block) + " past CUDA's limits (1024, 1024, 64)";
  if ((uint64_t)block.x * block.y * block.z > (uint64_t)kMaxThreadsPerBlock)
    return "block " + str(block) + " has more than 1024 threads";
  if (shared > kMaxDynamicShared) {
    code = cudaErrorInvalidValue;
    return std::to_string(shared) + " bytes of dynamic shared memory, past the 49152 a launch may use";
  }
  code = cudaSuccess;
  return "";
}

// Runs `body` as every thread of every block of the grid; returns the launch's error.
inline cudaError_t run_grid(dim3 grid, dim3 block, size_t shared, const std::function<void()>& body) {
  cudaError_t code;
  std::string why = check_launch(grid, block, shared, code);
  if (!why.empty()) {
    set_error(code, why);
    return code;
  }
  const uint64_t n_blocks = (uint64_t)grid.x * grid.y * grid.z;
  const int n_threads = (int)(block.x * block.y * block.z);
  std::unique_ptr<unsigned char[]> memory(shared ? new unsigned char[shared] : nullptr);
  unsigned char* smem = memory.get();
  auto poison = [smem, shared] {
    if (smem) std::memset(smem, 0xff, shared);
  };
  poison();
  BlockBarrier barrier(n_threads, poison);
  auto worker = [&](int t) {
    ThreadState& s = tls;
    s.thread_idx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    s.block_dim = block;
    s.grid_dim = grid;
    s.barrier = &barrier;
    s.shared = smem;
    for (uint64_t b; (b = barrier.block()) < n_blocks;) {
      s.block_idx = {(unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y),
                     (unsigned)(b / ((uint64_t)grid.x * grid.y))};
      body();
      barrier.arrive_and_wait(BlockBarrier::kBlockEnd);
    }
    s = ThreadState();
  };
  std::vector<std::thread> threads;
  threads.reserve(n_threads - 1);
  try {
    for (int t = 1; t < n_threads; ++t) threads.emplace_back(worker, t);
  } catch (const std::system_error& e) {  // those started run out of their kernel and exit
    barrier.abort("could not start " + std::to_string(n_threads) + " threads: " + e.what());
  }
  worker(0);
  for (auto& th : threads) th.join();
  std::string error = barrier.error();
  if (!error.empty()) {
    set_error(cudaErrorLaunchFailure, error);
    return cudaErrorLaunchFailure;
  }
  return cudaSuccess;
}

// A launch: the arguments are converted to the kernel's parameter types once, as CUDA copies
// them into the kernel's parameter space, and every thread calls the kernel with them.
template <class... P, class... A>
cudaError_t launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t shared, cudaStream_t,
                   A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "a kernel launch needs one argument per parameter");
  const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  return run_grid(grid, block, shared, [&] { std::apply(kernel, params); });
}

inline unsigned char* dynamic_shared() { return tls.shared; }

}  // namespace emulation

// The CPU has no stream: the handlers' cudaStream_t is bound to null.
struct NullStream {};
using StreamCtx = NullStream;

// XLA's CPU runtime has no scratch allocator: host memory, exactly the bytes asked for (so
// AddressSanitizer sees overruns), freed when the handler returns.
class HostScratch {
 public:
  std::optional<void*> Allocate(size_t size, size_t alignment = 1) {
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) return std::nullopt;
    void* p = ::operator new(size, std::align_val_t(std::max<size_t>(alignment, alignof(std::max_align_t))),
                             std::nothrow);
    if (!p) return std::nullopt;
    blocks_.push_back(Block(p, Free{std::max<size_t>(alignment, alignof(std::max_align_t))}));
    return p;
  }

 private:
  struct Free {
    size_t alignment;
    void operator()(void* p) const { ::operator delete(p, std::align_val_t(alignment)); }
  };
  using Block = std::unique_ptr<void, Free>;
  std::vector<Block> blocks_;
};
struct HostScratchCtx {};
using ScratchCtx = HostScratchCtx;
using Scratch = HostScratch;
}  // namespace megastep_cuda

template <>
struct xla::ffi::CtxDecoding<megastep_cuda::HostScratchCtx> {
  using Type = megastep_cuda::HostScratch;
  static std::optional<Type> Decode(const XLA_FFI_Api*, XLA_FFI_ExecutionContext*,
                                    DiagnosticEngine&) {
    return megastep_cuda::HostScratch();
  }
};

template <>
struct xla::ffi::CtxDecoding<megastep_cuda::NullStream> {
  using Type = cudaStream_t;
  static std::optional<Type> Decode(const XLA_FFI_Api*, XLA_FFI_ExecutionContext*,
                                    DiagnosticEngine&) {
    return nullptr;
  }
};

// The built-in variables, read-only as in CUDA.
inline thread_local const uint3& blockIdx = megastep_cuda::emulation::tls.block_idx;
inline thread_local const uint3& threadIdx = megastep_cuda::emulation::tls.thread_idx;
inline thread_local const dim3& blockDim = megastep_cuda::emulation::tls.block_dim;
inline thread_local const dim3& gridDim = megastep_cuda::emulation::tls.grid_dim;

inline void __syncthreads() {
  megastep_cuda::emulation::tls.barrier->arrive_and_wait(
      megastep_cuda::emulation::BlockBarrier::kSync);
}
inline int __syncthreads_or(int predicate) {
  return megastep_cuda::emulation::tls.barrier->arrive_and_wait(
      megastep_cuda::emulation::BlockBarrier::kSync, predicate);
}

// CUDA's int atomics on global or shared memory: the block's threads really run at once.
inline int atomicOr(int* address, int value) { return __atomic_fetch_or(address, value, __ATOMIC_RELAXED); }
inline int atomicAdd(int* address, int value) { return __atomic_fetch_add(address, value, __ATOMIC_RELAXED); }

inline cudaError_t cudaPeekAtLastError() { return megastep_cuda::emulation::last_error.code; }

inline cudaError_t cudaGetLastError() {
  cudaError_t code = megastep_cuda::emulation::last_error.code;
  megastep_cuda::emulation::last_error.code = cudaSuccess;
  return code;
}

// CUDA's description of the code, and in the emulation why the last launch gave it.
inline const char* cudaGetErrorString(cudaError_t code) {
  thread_local std::string text;
  switch (code) {
    case cudaSuccess: text = "no error"; break;
    case cudaErrorInvalidValue: text = "invalid argument"; break;
    case cudaErrorInvalidConfiguration: text = "invalid configuration argument"; break;
    case cudaErrorLaunchFailure: text = "unspecified launch failure"; break;
    default: text = "unknown error " + std::to_string((int)code); break;
  }
  const std::string& why = megastep_cuda::emulation::last_error.message;
  if (code != cudaSuccess && !why.empty()) text += " (CUDA emulation: " + why + ")";
  return text.c_str();
}

#define MS_LAUNCH(kernel, grid, block, shared, stream, ...) \
  ::megastep_cuda::emulation::launch(kernel, (grid), (block), (shared), (stream), __VA_ARGS__)
#define MS_DYNAMIC_SHARED(T, name) \
  T* name = reinterpret_cast<T*>(::megastep_cuda::emulation::dynamic_shared())

#endif  // __CUDACC__
