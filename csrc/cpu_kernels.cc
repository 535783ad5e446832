// CPU handlers for the bake, physics and render kernels, registered as XLA FFI targets.
//
// These only check shapes, broadcast leading batch axes and loop over batch members,
// envs, agents, pixels and texels; the maths is in megastep.h, shared with the CUDA file.
// Work is spread over XLA's intra-op thread pool.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "batching.h"
#include "draw_cpu.h"
#include "megastep.h"
#include "ffi_common.h"
#include "operands.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using megastep::Batching;
using megastep::Env;
using megastep::Vec;

namespace {

using namespace megastep_ffi;

// Below this many inner-loop operations a call runs on the calling thread: waking the pool
// costs more than it saves, and a busy machine may not schedule the helper for a while.
constexpr int64_t kParallelWork = 1 << 18;

// Runs f(i) for i in [0, n) on the calling thread and the pool; `work` estimates the total
// inner-loop operations. Completion never depends on a scheduled task starting: the caller
// claims chunks too, and a task that starts late finds none left and returns.
template <class F>
void parallel_for(ffi::ThreadPool& pool, int64_t n, int64_t work, const F& f) {
  int64_t threads = std::max<int64_t>(1, pool.num_threads());
  if (n <= 1 || threads <= 1 || work < kParallelWork) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  int64_t chunk = std::max<int64_t>(1, n / (threads * 8));
  int64_t n_chunks = (n + chunk - 1) / chunk;
  struct Counter {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto counter = std::make_shared<Counter>();
  auto run = [counter, n, chunk, n_chunks, &f]() {
    for (int64_t c; (c = counter->next.fetch_add(1)) < n_chunks;) {
      int64_t end = std::min(n, (c + 1) * chunk);
      for (int64_t i = c * chunk; i < end; ++i) f(i);
      counter->done.fetch_add(1, std::memory_order_release);
    }
  };
  int64_t helpers = std::min(threads - 1, n_chunks - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([run]() { run(); });
  run();
  while (counter->done.load(std::memory_order_acquire) < n_chunks) std::this_thread::yield();
}

// ---------------------------------------------------------------------------------------
ffi::Error RenderImpl(ffi::ThreadPool pool, F32 lines, S32 n_lines, F32 lights, S32 n_lights,
                      F32 textures, S32 texel_starts, S32 texel_widths, F32 baked, F32 model,
                      F32 angles, F32 positions, F32 fov, F32 radius, S32Out indices,
                      F32Out locations, F32Out dots, F32Out distances, F32Out screen) {
  Batching b;
  megastep::Sizes s;
  std::string err = megastep::render_layout(
      {dims_of(lines), dims_of(n_lines), dims_of(lights), dims_of(n_lights), dims_of(textures),
       dims_of(texel_starts), dims_of(texel_widths), dims_of(baked), dims_of(model),
       dims_of(angles), dims_of(positions), dims_of(fov), dims_of(radius)},
      dims_of(*indices), b, s);
  if (!err.empty()) return invalid(err);
  const int64_t E = s.E, A = s.A, R = s.R, L = s.L;
  megastep::SceneryPtrs ptrs;
  ptrs.lines = lines.typed_data(); ptrs.n_lines = n_lines.typed_data();
  ptrs.lights = lights.typed_data(); ptrs.n_lights = n_lights.typed_data();
  ptrs.textures = textures.typed_data(); ptrs.starts = texel_starts.typed_data();
  ptrs.widths = texel_widths.typed_data(); ptrs.baked = baked.typed_data();
  int32_t* idx_o = indices->typed_data();
  float* loc_o = locations->typed_data();
  float* dot_o = dots->typed_data();
  float* dist_o = distances->typed_data();
  float* scr_o = screen->typed_data();
  int n_agent_lines = (int)(A * megastep::kModelLines);

  parallel_for(pool, b.size * E, b.size * E * A * R * L, [&](int64_t task) {
    int64_t flat = task / E, e = task % E;
    const float* ang = angles.typed_data() + (b.block(megastep::kAngles, flat) * E + e) * A;
    const float* pos = positions.typed_data() + (b.block(megastep::kPositions, flat) * E + e) * A * 2;
    // Per-thread scratch, reused across tasks: drawn agent lines and one camera's rays.
    thread_local std::vector<float> drawn, ux, uy, near_s, best_s, best_t;
    thread_local std::vector<int> best_i;
    drawn.resize(n_agent_lines * 4);
    for (auto* v : {&ux, &uy, &near_s, &best_s, &best_t}) v->resize(R);
    best_i.resize(R);
    megastep::draw_agents(model.typed_data() + b.block(megastep::kModel, flat) * megastep::kModelLines * 4,
                          pos, ang, (int)A, drawn.data());
    Env env = megastep::env_at(b, flat, e, s, ptrs, n_agent_lines, drawn.data());
    float fv = fov.typed_data()[b.block(megastep::kFov, flat)];
    float rad = radius.typed_data()[b.block(megastep::kRadius, flat)];
    // An fov outside (0, 180) has no camera: the outputs are NaN rather than clipped.
    bool valid = fv > 0.f && fv < 180.f && rad >= 0.f;
    float tan_half = tanf(fv * (megastep::kPi / 360.f));
    for (int64_t a = 0; a < A; ++a) {
      int64_t base = ((flat * E + e) * A + a) * R;
      if (!valid) {
        for (int64_t o = base; o < base + R; ++o) {
          idx_o[o] = -1;
          loc_o[o] = dot_o[o] = dist_o[o] = NAN;
          scr_o[3 * o] = scr_o[3 * o + 1] = scr_o[3 * o + 2] = NAN;
        }
        continue;
      }
      float rd = ang[a] * (megastep::kPi / 180.f);
      float c = cosf(rd), sn = sinf(rd);
      Vec p = {pos[2 * a], pos[2 * a + 1]};
      for (int64_t r = 0; r < R; ++r) {
        Vec u = megastep::pixel_ray((int)r, (int)R, tan_half, c, sn);
        ux[r] = u.x;
        uy[r] = u.y;
        near_s[r] = megastep::near_plane(u, rad);
        best_s[r] = INFINITY;
        best_t[r] = 0.f;
        best_i[r] = -1;
      }
      // Lines outside, pixels inside: the inner loop is SIMD across the pixels the line
      // can reach, and each pixel still meets the lines in index order (the tie rule).
      float* bs = best_s.data();
      float* bt = best_t.data();
      int* bi = best_i.data();
      const float* pux = ux.data();
      const float* puy = uy.data();
      const float* pn = near_s.data();
      for (int j = 0; j < env.n_lines; ++j) {
        megastep::Line line = megastep::env_line(env, j);
        int lo, hi;
        megastep::pixel_range(line, p, c, sn, tan_half, (int)R, lo, hi);
        megastep::LineTerms lt = megastep::line_terms(line, p);
#pragma omp simd
        for (int r = lo; r < hi; ++r) megastep::ray_update(lt, pux[r], puy[r], pn[r], j, bs[r], bi[r], bt[r]);
      }
      for (int64_t r = 0; r < R; ++r) {
        int64_t o = base + r;
        megastep::Pixel px = megastep::shade(env, {ux[r], uy[r]}, {best_i[r], best_s[r], best_t[r]});
        idx_o[o] = px.index;
        loc_o[o] = px.location;
        dot_o[o] = px.dot;
        dist_o[o] = px.distance;
        for (int k = 0; k < 3; ++k) scr_o[3 * o + k] = px.rgb[k];
      }
    }
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------
ffi::Error PhysicsImpl(ffi::ThreadPool pool, F32 lines, S32 n_lines, F32 positions, F32 velocity,
                       F32 angles, F32 angvelocity, F32 fps, F32 radius, F32 restitution,
                       int32_t collision, F32Out positions_out, F32Out velocity_out,
                       F32Out angles_out, F32Out angvelocity_out, F32Out progress_out) {
  Batching b;
  megastep::Sizes s;
  std::string err = megastep::physics_layout(
      {dims_of(lines), dims_of(n_lines), dims_of(positions), dims_of(velocity), dims_of(angles),
       dims_of(angvelocity), dims_of(fps), dims_of(radius), dims_of(restitution)},
      dims_of(*progress_out), collision, b, s);
  if (!err.empty()) return invalid(err);
  const int64_t E = s.E, A = s.A, L = s.L;
  megastep::SceneryPtrs ptrs;
  ptrs.lines = lines.typed_data();
  ptrs.n_lines = n_lines.typed_data();
  int n_agent_lines = (int)(A * megastep::kModelLines);

  parallel_for(pool, b.size * E, b.size * E * A * (A + L) * 16, [&](int64_t task) {
    using namespace megastep;
    int64_t flat = task / E, e = task % E;
    Env env = env_at(b, flat, e, s, ptrs, n_agent_lines, nullptr);
    auto at = [&](int op) { return b.block(op, flat) * E + e; };
    const float* pos = positions.typed_data() + at(kPPositions) * A * 2;
    const float* vel = velocity.typed_data() + at(kPVelocity) * A * 2;
    const float* ang = angles.typed_data() + at(kPAngles) * A;
    const float* angv = angvelocity.typed_data() + at(kPAngvelocity) * A;
    float f = fps.typed_data()[b.block(kPFps, flat)];
    float rad = radius.typed_data()[b.block(kPRadius, flat)];
    float rest = restitution.typed_data()[b.block(kPRestitution, flat)];
    thread_local std::vector<float> wall_cache;
    wall_cache.resize(A * 3);
    int64_t out = (flat * E + e) * A;
    physics_env(env, pos, vel, ang, angv, (int)A, f, rad, collision, rest,
                positions_out->typed_data() + 2 * out, velocity_out->typed_data() + 2 * out,
                angles_out->typed_data() + out, angvelocity_out->typed_data() + out,
                progress_out->typed_data() + out, wall_cache.data());
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------
ffi::Error BakeImpl(ffi::ThreadPool pool, F32 lines, S32 n_lines, F32 lights, S32 n_lights,
                    S32 texel_starts, S32 texel_widths, int32_t n_agents, F32Out baked) {
  Batching b;
  megastep::Sizes s;
  std::string err = megastep::bake_layout(
      {dims_of(lines), dims_of(n_lines), dims_of(lights), dims_of(n_lights),
       dims_of(texel_starts), dims_of(texel_widths)},
      dims_of(*baked), n_agents, b, s);
  if (!err.empty()) return invalid(err);
  const int64_t E = s.E, L = s.L, T = s.T;
  megastep::SceneryPtrs ptrs = megastep::bake_ptrs(lines.typed_data(), n_lines.typed_data(),
                                                   lights.typed_data(), n_lights.typed_data(),
                                                   texel_starts.typed_data(), texel_widths.typed_data());
  int n_agent_lines = n_agents * megastep::kModelLines;
  float* out = baked->typed_data();
  std::fill(out, out + b.size * E * T, 1.f);
  // One task per (batch member, env, line): plans have few envs but many lines.
  parallel_for(pool, b.size * E * L, b.size * E * T * (s.NL + 1) * L, [&](int64_t task) {
    int64_t j = task % L, fe = task / L;
    int64_t flat = fe / E, e = fe % E;
    Env env = megastep::env_at(b, flat, e, s, ptrs, n_agent_lines, nullptr);
    if (j < n_agent_lines || j >= env.n_lines) return;
    int w = env.texel_widths[j], start = env.texel_starts[j];
    if (w < 1 || start < 0 || start > T - w) return;
    float* dst = out + (flat * E + e) * T + start;
    for (int k = 0; k < w; ++k) dst[k] = megastep::bake_texel(env, (int)j, k, w);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepRenderCpu, RenderImpl, megastep_ffi::render_binding<ffi::ThreadPool>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepPhysicsCpu, PhysicsImpl, megastep_ffi::physics_binding<ffi::ThreadPool>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepBakeCpu, BakeImpl, megastep_ffi::bake_binding<ffi::ThreadPool>());

PYBIND11_MODULE(_megastep_cpu, m) {
  m.doc() = "megastep_jax CPU kernels as XLA FFI handlers";
  m.def("registrations", []() {
    return megastep_ffi::registrations(MegastepRenderCpu, MegastepPhysicsCpu, MegastepBakeCpu, "", MegastepDrawCpu);
  });
}
