// The CUDA kernels compiled by the C++ compiler: cuda_kernels.cu with cuda_emulation.h's
// CPU emulation of its launches, as the Python module _megastep_cuda_emulated. Its handlers
// are CPU FFI targets named megastep_{render,physics,bake,seen}_cuda_emulated.
//
// The module also exposes the emulator itself to the tests: its launch-limit checks, the
// grid the handlers use for n blocks, and a block reduction through shared memory and
// __syncthreads (with an optional divergent barrier).
#include "cuda_kernels.cu"

#include <stdexcept>
#include <tuple>
#include <vector>

#include "pybind11/stl.h"

namespace {

// Sums x in every block of the grid: each thread adds a strided share, then a tree over the
// block's shared memory (blockDim.x a power of two). With `diverge`, thread 0 returns before
// the first __syncthreads.
__global__ void reduce_kernel(const float* x, int n, int diverge, float* out) {
  MS_DYNAMIC_SHARED(float, partial);
  unsigned t = threadIdx.x;
  float acc = 0.f;
  for (int i = (int)t; i < n; i += (int)blockDim.x) acc += x[i];
  if (diverge && t == 0) return;
  partial[t] = acc;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (t < half) partial[t] += partial[t + half];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = partial[0];
}

std::vector<float> reduce_sum(const std::vector<float>& x, unsigned blocks, unsigned threads,
                              size_t shared, bool diverge) {
  std::vector<float> out(blocks, 0.f);
  MS_LAUNCH(reduce_kernel, dim3(blocks), dim3(threads), shared, nullptr, x.data(), (int)x.size(),
            (int)diverge, out.data());
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(cudaGetErrorString(e));
  return out;
}

// Every thread t of one block calls __syncthreads_or(flags[round][t]) for each round and
// records what it got: out[round][t].
__global__ void any_kernel(const int* flags, int rounds, int* out) {
  int n = (int)blockDim.x, t = (int)threadIdx.x;
  for (int r = 0; r < rounds; ++r) out[r * n + t] = __syncthreads_or(flags[r * n + t]);
}

std::vector<int> syncthreads_or(const std::vector<int>& flags, unsigned threads) {
  int rounds = (int)(flags.size() / threads);
  std::vector<int> out(flags.size(), -1);
  MS_LAUNCH(any_kernel, dim3(1), dim3(threads), 0, nullptr, flags.data(), rounds, out.data());
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(cudaGetErrorString(e));
  return out;
}

using Dim = std::tuple<unsigned, unsigned, unsigned>;

std::string check_launch(Dim grid, Dim block, size_t shared) {
  cudaError_t code;
  return megastep_cuda::emulation::check_launch(
      dim3(std::get<0>(grid), std::get<1>(grid), std::get<2>(grid)),
      dim3(std::get<0>(block), std::get<1>(block), std::get<2>(block)), shared, code);
}

}  // namespace

PYBIND11_MODULE(_megastep_cuda_emulated, m) {
  m.doc() = "megastep_jax CUDA kernels run on the CPU by an emulation of CUDA, as XLA FFI handlers";
  m.def("registrations", []() {
    return megastep_ffi::registrations(MegastepRenderCuda, MegastepPhysicsCuda, MegastepBakeCuda, MegastepSeenCuda,
                                       "_cuda_emulated", MegastepDrawCuda);
  });
  m.def("check_launch", &check_launch, "'' or why CUDA refuses a (grid, block, shared bytes) launch");
  m.def("grid_for", [](int64_t n) {
    dim3 g = grid_for(n);
    return std::make_tuple(g.x, g.y, g.z);
  }, "The handlers' grid for n blocks");
  m.def("max_blocks", []() { return kMaxBlocks; });
  m.def("max_shared_agents", []() { return kMaxSharedAgents; });
  m.def("syncthreads_or", &syncthreads_or, "What each thread of one block got from __syncthreads_or, per round",
        pybind11::arg("flags"), pybind11::arg("threads"));
  m.def("reduce_sum", &reduce_sum, "Per-block sums of x by an emulated kernel",
        pybind11::arg("x"), pybind11::arg("blocks"), pybind11::arg("threads"),
        pybind11::arg("shared"), pybind11::arg("diverge") = false);
}
