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

// Composites one symbol over `acc` (H, W, 3).
inline void draw_symbol(const Bank& b, const Symbol& s, float* acc) {
  if (s.sprite < 0 || s.sprite >= b.K || !(s.scale > 0.f) || !std::isfinite(s.scale)) return;
  const int64_t k = s.sprite;
  const int sw = (int)std::min<int64_t>(std::max<int32_t>(b.sizes[2 * k], 0), b.w - 2);
  const int sh = (int)std::min<int64_t>(std::max<int32_t>(b.sizes[2 * k + 1], 0), b.h - 2);
  const float* image = b.sprites + k * b.h * b.w * 4;
  if (sw <= 0 || sh <= 0 || !std::isfinite(s.x) || !std::isfinite(s.y) || !std::isfinite(s.angle)) return;
  const float c = std::cos(s.angle), sn = std::sin(s.angle), inv = 1.f / s.scale;
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
      const float dx = (float)px + 0.5f - s.x;
      const float u = (c * dx + sn * dy) * inv + sw / 2.f - 0.5f;
      const float v = (-sn * dx + c * dy) * inv + sh / 2.f - 0.5f;
      if (!(u > -1.f && v > -1.f && u < sw && v < sh)) continue;
      const float fu0 = std::floor(u), fv0 = std::floor(v);
      const int u0 = (int)fu0, v0 = (int)fv0;
      const float fu = u - fu0, fv = v - fv0;
      const float w00 = (1 - fu) * (1 - fv), w10 = fu * (1 - fv), w01 = (1 - fu) * fv, w11 = fu * fv;
      // u0 in [-1, sw - 1], v0 in [-1, sh - 1]: the four taps lie in the bordered slot
      const float* t00 = image + ((int64_t)(v0 + 1) * b.w + (u0 + 1)) * 4;
      const float* t01 = t00 + b.w * 4;
      float rgba[4];
      for (int ch = 0; ch < 4; ++ch) {
        rgba[ch] = w00 * t00[ch] + w10 * t00[4 + ch] + w01 * t01[ch] + w11 * t01[4 + ch];
      }
      float* o = acc + (py * b.W + px) * 3;
      const float keep = 1.f - rgba[3];
      o[0] = o[0] * keep + rgba[0];
      o[1] = o[1] * keep + rgba[1];
      o[2] = o[2] * keep + rgba[2];
    }
  }
}

inline float to_level(float x) {
  x = std::min(std::max(x, 0.f), 1.f) * 255.f;
  return std::nearbyint(x);  // half to even, as jnp.round
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
      out[p] = (uint8_t)std::nearbyint(r * 0.299f + g * 0.587f + bl * 0.114f);
    }
  }
}

}  // namespace megastep_draw
