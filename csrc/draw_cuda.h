// The CUDA XLA FFI handler of Moving Symbols' draw kernel (maths in draw.h): one thread
// block per frame, its threads striding over the frame's pixels (draw_pixel). Included by
// cuda_kernels.cu, so the same code runs under nvcc and under cuda_emulation.h (the
// emulated module's target megastep_draw_cuda_emulated, which the tests run on the CPU).
// Operands as draw_cpu.h.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "draw.h"
#include "xla/ffi/api/ffi.h"

namespace megastep_draw {

namespace dcu = xla::ffi;

__global__ void draw_frames_kernel(Bank b, const int32_t* sprite, const int32_t* background, const float* position,
                                   const float* angle, const float* scale, int64_t N, int64_t S, int channels,
                                   uint8_t* frames) {
  const int64_t f = (int64_t)blockIdx.y * gridDim.x + blockIdx.x;
  if (f >= N) return;
  constexpr int kMaxSymbols = 32;
  Symbol symbols[kMaxSymbols];
  const int64_t n_sym = S < kMaxSymbols ? S : kMaxSymbols;
  for (int64_t i = 0; i < n_sym; ++i) {
    const int64_t j = f * S + i;
    symbols[i] = Symbol{sprite[j], position[2 * j], position[2 * j + 1], angle[j], scale[j]};
  }
  const int64_t pixels = b.H * b.W;
  for (int64_t p = threadIdx.x; p < pixels; p += blockDim.x) {
    draw_pixel(b, background[f], symbols, n_sym, channels, p % b.W, p / b.W, frames + (f * pixels + p) * channels);
  }
}

inline dcu::Error DrawCudaImpl(cudaStream_t stream, dcu::Buffer<dcu::F32> sprites, dcu::Buffer<dcu::S32> sizes,
                               dcu::Buffer<dcu::F32> backgrounds, dcu::Buffer<dcu::S32> sprite,
                               dcu::Buffer<dcu::S32> background, dcu::Buffer<dcu::F32> position,
                               dcu::Buffer<dcu::F32> angle, dcu::Buffer<dcu::F32> scale,
                               dcu::ResultBuffer<dcu::U8> frames) {
  auto bad = [](const std::string& msg) {
    return dcu::Error(dcu::ErrorCode::kInvalidArgument, "megastep draw: " + msg);
  };
  auto sd = sprites.dimensions(), zd = sizes.dimensions(), bd = backgrounds.dimensions();
  auto kd = sprite.dimensions(), gd = background.dimensions(), pd = position.dimensions();
  auto ad = angle.dimensions(), cd = scale.dimensions(), od = frames->dimensions();
  int64_t N = 0, S = 0;
  std::string err = draw_layout(sd, zd, bd, kd, gd, pd, ad, cd, od, N, S);
  if (!err.empty()) return bad(err);
  if (S > 32) return bad("sprite: at most 32 symbols per frame on CUDA");
  if (N == 0) return dcu::Error::Success();
  const int64_t max_x = megastep_cuda::kMaxGridX, max_y = megastep_cuda::kMaxGridYZ;
  if (N > max_x * max_y) return bad("sprite: too many frames for one launch");
  Bank b{sprites.typed_data(), sizes.typed_data(), backgrounds.typed_data(), sd[0], sd[1], sd[2], bd[0], bd[1], bd[2]};
  const int64_t gx = std::min<int64_t>(N, max_x);
  const dim3 grid((unsigned)gx, (unsigned)((N + gx - 1) / gx));
  MS_LAUNCH(draw_frames_kernel, grid, 256, 0, stream, b, sprite.typed_data(), background.typed_data(),
            position.typed_data(), angle.typed_data(), scale.typed_data(), N, S, (int)od[3],
            frames->typed_data());
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return dcu::Error(dcu::ErrorCode::kInternal, std::string("megastep draw: ") + cudaGetErrorString(e));
  return dcu::Error::Success();
}

}  // namespace megastep_draw

XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepDrawCuda, megastep_draw::DrawCudaImpl, megastep_draw::draw_binding<megastep_cuda::StreamCtx>());
