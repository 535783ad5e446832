// The CPU XLA FFI handler of Moving Symbols' draw kernel (maths in draw.h). Included by
// cpu_kernels.cc, which lists MegastepDrawCpu in its registrations().
//
// draw(sprites (K, h, w, 4) f32, sizes (K, 2) s32, backgrounds (B, H, W, 3) f32,
//      sprite (N, S) s32, background (N,) s32, position (N, S, 2) f32, angle (N, S) f32,
//      scale (N, S) f32) -> frames (N, H, W, C) u8, C = 3 or 1
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "draw.h"
#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

namespace megastep_draw {

namespace dffi = xla::ffi;

inline dffi::Error draw_invalid(const std::string& msg) {
  return dffi::Error(dffi::ErrorCode::kInvalidArgument, "megastep draw: " + msg);
}

inline dffi::Error DrawImpl(dffi::ThreadPool pool, dffi::Buffer<dffi::F32> sprites,
                            dffi::Buffer<dffi::S32> sizes, dffi::Buffer<dffi::F32> backgrounds,
                            dffi::Buffer<dffi::S32> sprite, dffi::Buffer<dffi::S32> background,
                            dffi::Buffer<dffi::F32> position, dffi::Buffer<dffi::F32> angle,
                            dffi::Buffer<dffi::F32> scale, dffi::ResultBuffer<dffi::U8> frames) {
  auto sd = sprites.dimensions(), zd = sizes.dimensions(), bd = backgrounds.dimensions();
  auto kd = sprite.dimensions(), gd = background.dimensions(), pd = position.dimensions();
  auto ad = angle.dimensions(), cd = scale.dimensions(), od = frames->dimensions();
  int64_t N = 0, S = 0;
  std::string err = draw_layout(sd, zd, bd, kd, gd, pd, ad, cd, od, N, S);
  if (!err.empty()) return draw_invalid(err);
  Bank b{sprites.typed_data(), sizes.typed_data(), backgrounds.typed_data(),
         sd[0], sd[1], sd[2], bd[0], bd[1], bd[2]};
  const int channels = (int)od[3];
  const int32_t* spr = sprite.typed_data();
  const int32_t* bg = background.typed_data();
  const float* pos = position.typed_data();
  const float* ang = angle.typed_data();
  const float* sc = scale.typed_data();
  uint8_t* out = frames->typed_data();
  const int64_t frame_size = b.H * b.W * channels;
  megastep_cpu::parallel_for(pool, N, megastep_cpu::kParallelWork, [&](int64_t f) {
    thread_local std::vector<float> acc;
    thread_local std::vector<Symbol> symbols;
    acc.resize(b.H * b.W * 3);
    symbols.resize(S);
    for (int64_t i = 0; i < S; ++i) {
      int64_t j = f * S + i;
      symbols[i] = Symbol{spr[j], pos[2 * j], pos[2 * j + 1], ang[j], sc[j]};
    }
    draw_frame(b, bg[f], symbols.data(), S, channels, acc.data(), out + f * frame_size);
  });
  return dffi::Error::Success();
}

}  // namespace megastep_draw

XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepDrawCpu, megastep_draw::DrawImpl, megastep_draw::draw_binding<xla::ffi::ThreadPool>());
