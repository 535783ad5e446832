// Moving Symbols' frame drawing: the maths of one frame, shared by the CPU handler
// (draw_cpu.h). The jnp twin is megastep_jax/moving_symbols/drawing.py::draw_reference;
// the two agree to within one level of 255.
//
// Each symbol's premultiplied RGBA image (width sw, height sh, stored at the top-left of a
// padded h x w slot) is scaled by `scale` and turned by `angle` (clockwise on screen, y
// down) about its centre, put at `position`; each frame pixel whose centre maps inside the
// image (plus one texel for the bilinear taps) takes the bilinear sample, zero outside,
// composited over what lies below. Only the pixels of the symbol's bounding box are
// visited. Every index is checked: a sprite or background index out of range draws
// nothing (black for the background).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "xla/ffi/api/ffi.h"

#if defined(__CUDACC__)
#define DRAW_FN __host__ __device__ inline
#else
#define DRAW_FN inline
#endif

namespace megastep_draw {

struct Bank {
  const float* sprites;      // (K, h, w, 4), each image at [1, 1 + height) x [1, 1 + width)
  const int32_t* sizes;      // (K, 2): width, height (at most w - 2, h - 2)
  const float* backgrounds;  // (B, H, W, 3)
  int64_t K, h, w, B, H, W;
};

struct Symbol {
  int32_t sprite;
  float x, y, angle, scale;
};

// What the CPU loop and the CUDA kernel share: one symbol's placement, and the bilinear
// sample of its image at one frame pixel.
struct Placed {
  const float* image;  // the symbol's bordered slot
  int sw, sh;          // the image's width and height (0: draw nothing)
  float c, sn, inv;    // cos and sin of the angle, 1 / scale
};

DRAW_FN bool finite(float x) { return fabsf(x) <= 3.402823466e38f; }  // false for NaN and inf

DRAW_FN Placed place(const Bank& b, const Symbol& s) {
  Placed p{nullptr, 0, 0, 1.f, 0.f, 1.f};
  if (s.sprite < 0 || s.sprite >= b.K || !(s.scale > 0.f) || !finite(s.scale) || !finite(s.x) || !finite(s.y) ||
      !finite(s.angle))
    return p;
  const int64_t k = s.sprite;
  int32_t sw = b.sizes[2 * k], sh = b.sizes[2 * k + 1];
  sw = sw < 0 ? 0 : (sw > b.w - 2 ? (int32_t)(b.w - 2) : sw);
  sh = sh < 0 ? 0 : (sh > b.h - 2 ? (int32_t)(b.h - 2) : sh);
  p.image = b.sprites + k * b.h * b.w * 4;
  p.sw = sw;
  p.sh = sh;
  p.c = cosf(s.angle);
  p.sn = sinf(s.angle);
  p.inv = 1.f / s.scale;
  return p;
}

// Premultiplied RGBA of the symbol at frame pixel (px, py) (its centre); false where the
// pixel lies outside the image and its one-texel border (the sample is then zero).
DRAW_FN bool sample(const Bank& b, const Symbol& s, const Placed& p, int64_t px, int64_t py, float rgba[4]) {
  const float dx = (float)px + 0.5f - s.x, dy = (float)py + 0.5f - s.y;
  const float u = (p.c * dx + p.sn * dy) * p.inv + p.sw / 2.f - 0.5f;
  const float v = (-p.sn * dx + p.c * dy) * p.inv + p.sh / 2.f - 0.5f;
  if (!(u > -1.f && v > -1.f && u < p.sw && v < p.sh)) return false;
  const float fu0 = floorf(u), fv0 = floorf(v);
  const int u0 = (int)fu0, v0 = (int)fv0;
  const float fu = u - fu0, fv = v - fv0;
  const float w00 = (1 - fu) * (1 - fv), w10 = fu * (1 - fv), w01 = (1 - fu) * fv, w11 = fu * fv;
  // u0 in [-1, sw - 1], v0 in [-1, sh - 1]: the four taps lie in the bordered slot
  const float* t00 = p.image + ((int64_t)(v0 + 1) * b.w + (u0 + 1)) * 4;
  const float* t01 = t00 + b.w * 4;
  for (int ch = 0; ch < 4; ++ch) {
    rgba[ch] = w00 * t00[ch] + w10 * t00[4 + ch] + w01 * t01[ch] + w11 * t01[4 + ch];
  }
  return true;
}

DRAW_FN float to_level(float x) {
  x = x > 0.f ? (x < 1.f ? x : 1.f) : 0.f;  // NaN to 0; ternaries, not fminf: those stay calls
  return nearbyintf(x * 255.f);             // half to even, as jnp.round
}

// One output pixel (the CUDA kernel's unit of work): the background, the symbols in order,
// then levels into out[0..channels).
DRAW_FN void draw_pixel(const Bank& b, int32_t background, const Symbol* symbols, int64_t S, int channels,
                        int64_t px, int64_t py, uint8_t* out) {
  float rgb[3] = {0.f, 0.f, 0.f};
  if (background >= 0 && background < b.B) {
    const float* bg = b.backgrounds + ((background * b.H + py) * b.W + px) * 3;
    rgb[0] = bg[0];
    rgb[1] = bg[1];
    rgb[2] = bg[2];
  }
  for (int64_t i = 0; i < S; ++i) {
    Placed p = place(b, symbols[i]);
    float rgba[4];
    if (p.sw <= 0 || p.sh <= 0 || !sample(b, symbols[i], p, px, py, rgba)) continue;
    const float keep = 1.f - rgba[3];
    rgb[0] = rgb[0] * keep + rgba[0];
    rgb[1] = rgb[1] * keep + rgba[1];
    rgb[2] = rgb[2] * keep + rgba[2];
  }
  const float r = to_level(rgb[0]), g = to_level(rgb[1]), bl = to_level(rgb[2]);
  if (channels == 3) {
    out[0] = (uint8_t)r;
    out[1] = (uint8_t)g;
    out[2] = (uint8_t)bl;
  } else {
    out[0] = (uint8_t)nearbyintf(r * 0.299f + g * 0.587f + bl * 0.114f);
  }
}

// Composites one symbol over `acc` (H, W, 3) on the CPU, visiting only the pixels of each
// row that its image covers.
inline void draw_symbol(const Bank& b, const Symbol& s, float* acc) {
  const Placed p = place(b, s);
  if (p.sw <= 0 || p.sh <= 0) return;
  const int sw = p.sw, sh = p.sh;
  const float c = p.c, sn = p.sn, inv = p.inv;
  // bounding box of the turned, scaled image, one texel wider for the bilinear taps
  const float hw = (sw / 2.f + 1.f) * s.scale, hh = (sh / 2.f + 1.f) * s.scale;
  const float ex = std::fabs(c) * hw + std::fabs(sn) * hh, ey = std::fabs(sn) * hw + std::fabs(c) * hh;
  // clamped before the casts, so that far-away symbols stay defined behaviour
  auto in_x = [&](float v) { return std::min(std::max(v, -2.f), (float)b.W + 2.f); };
  auto in_y = [&](float v) { return std::min(std::max(v, -2.f), (float)b.H + 2.f); };
  const int64_t x0 = std::max<int64_t>(0, (int64_t)std::floor(in_x(s.x - ex)) - 1);
  const int64_t x1 = std::min<int64_t>(b.W, (int64_t)std::ceil(in_x(s.x + ex)) + 1);
  const int64_t y0 = std::max<int64_t>(0, (int64_t)std::floor(in_y(s.y - ey)) - 1);
  const int64_t y1 = std::min<int64_t>(b.H, (int64_t)std::ceil(in_y(s.y + ey)) + 1);
  // u and v are affine in px along a row: u = u_row + du * px, v = v_row + dv * px
  const float du = c * inv, dv = -sn * inv;
  for (int64_t py = y0; py < y1; ++py) {
    const float dy = (float)py + 0.5f - s.y;
    const float u_row = (c * (0.5f - s.x) + sn * dy) * inv + sw / 2.f - 0.5f;
    const float v_row = (-sn * (0.5f - s.x) + c * dy) * inv + sh / 2.f - 0.5f;
    // the columns where -1 < u < sw and -1 < v < sh, widened by a pixel against rounding
    float lo = (float)x0, hi = (float)x1;
    auto slab = [&](float start, float slope, float upper) {
      if (std::fabs(slope) < 1e-12f) {
        if (!(start > -1.f && start < upper)) hi = lo;
        return;
      }
      float a = (-1.f - start) / slope, b = (upper - start) / slope;
      if (a > b) std::swap(a, b);
      lo = std::max(lo, a - 1.f);
      hi = std::min(hi, b + 1.f);
    };
    slab(u_row, du, (float)sw);
    slab(v_row, dv, (float)sh);
    if (!(hi > lo)) continue;
    const int64_t px0 = std::max<int64_t>(x0, (int64_t)std::floor(lo));
    const int64_t px1 = std::min<int64_t>(x1, (int64_t)std::ceil(hi) + 1);
    for (int64_t px = px0; px < px1; ++px) {
      float rgba[4];
      if (!sample(b, s, p, px, py, rgba)) continue;
      float* o = acc + (py * b.W + px) * 3;
      const float keep = 1.f - rgba[3];
      o[0] = o[0] * keep + rgba[0];
      o[1] = o[1] * keep + rgba[1];
      o[2] = o[2] * keep + rgba[2];
    }
  }
}

// One frame: background (or black), the symbols in order, then uint8 levels into `out`
// (H, W, channels), channels 3 (RGB) or 1 (luma). `acc` is scratch of H * W * 3 floats.
inline void draw_frame(const Bank& b, int32_t background, const Symbol* symbols, int64_t S, int channels,
                       float* acc, uint8_t* out) {
  const int64_t n = b.H * b.W * 3;
  if (background >= 0 && background < b.B) {
    std::copy(b.backgrounds + background * n, b.backgrounds + (background + 1) * n, acc);
  } else {
    std::fill(acc, acc + n, 0.f);
  }
  for (int64_t i = 0; i < S; ++i) draw_symbol(b, symbols[i], acc);
  const int64_t pixels = b.H * b.W;
  if (channels == 3) {
    for (int64_t i = 0; i < 3 * pixels; ++i) out[i] = (uint8_t)to_level(acc[i]);
  } else {
    for (int64_t p = 0; p < pixels; ++p) {
      const float r = to_level(acc[3 * p]), g = to_level(acc[3 * p + 1]), bl = to_level(acc[3 * p + 2]);
      out[p] = (uint8_t)nearbyintf(r * 0.299f + g * 0.587f + bl * 0.114f);
    }
  }
}

// Host side, shared by the CPU and CUDA handlers: "" or what is wrong with the operands'
// shapes (sd sprites, zd sizes, bd backgrounds, kd sprite, gd background, pd position, ad
// angle, cd scale, od frames); sets N frames and S symbols per frame.
template <class D>
inline std::string draw_layout(const D& sd, const D& zd, const D& bd, const D& kd, const D& gd,
                               const D& pd, const D& ad, const D& cd, const D& od, int64_t& N,
                               int64_t& S) {
  if (sd.size() != 4 || sd[3] != 4) return "sprites: expected (K, h, w, 4)";
  if (zd.size() != 2 || zd[0] != sd[0] || zd[1] != 2) return "sizes: expected (K, 2)";
  if (bd.size() != 4 || bd[3] != 3) return "backgrounds: expected (B, H, W, 3)";
  if (kd.size() != 2) return "sprite: expected (N, S)";
  N = kd[0];
  S = kd[1];
  if (gd.size() != 1 || gd[0] != N) return "background: expected (N,)";
  if (pd.size() != 3 || pd[0] != N || pd[1] != S || pd[2] != 2) return "position: expected (N, S, 2)";
  if (ad.size() != 2 || ad[0] != N || ad[1] != S) return "angle: expected (N, S)";
  if (cd.size() != 2 || cd[0] != N || cd[1] != S) return "scale: expected (N, S)";
  if (od.size() != 4 || od[0] != N || od[1] != bd[1] || od[2] != bd[2] || (od[3] != 3 && od[3] != 1))
    return "frames: expected (N, H, W, 3 or 1)";
  return "";
}

// The FFI signature of the draw handlers: sprites, sizes, backgrounds, sprite, background,
// position, angle, scale -> frames; bound with the platform's context type.
template <class Ctx>
auto draw_binding() {
  namespace ffi = xla::ffi;
  return ffi::Ffi::Bind()
      .template Ctx<Ctx>()
      .template Arg<ffi::Buffer<ffi::F32>>()
      .template Arg<ffi::Buffer<ffi::S32>>()
      .template Arg<ffi::Buffer<ffi::F32>>()
      .template Arg<ffi::Buffer<ffi::S32>>()
      .template Arg<ffi::Buffer<ffi::S32>>()
      .template Arg<ffi::Buffer<ffi::F32>>()
      .template Arg<ffi::Buffer<ffi::F32>>()
      .template Arg<ffi::Buffer<ffi::F32>>()
      .template Ret<ffi::Buffer<ffi::U8>>();
}

}  // namespace megastep_draw
