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
#include "megastep.h"
#include "pybind11/pybind11.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using megastep::Batching;
using megastep::Env;
using megastep::Vec;

namespace {

using F32 = ffi::Buffer<ffi::F32>;
using S32 = ffi::Buffer<ffi::S32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;
using S32Out = ffi::ResultBuffer<ffi::S32>;

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

template <class B>
std::vector<int64_t> dims_vec(const B& buf) {
  auto d = buf.dimensions();
  return std::vector<int64_t>(d.begin(), d.end());
}

// The trailing `core` dims of an operand.
std::vector<int64_t> core_dims(const std::vector<int64_t>& dims, int core) {
  return std::vector<int64_t>(dims.end() - core, dims.end());
}

ffi::Error invalid(const std::string& msg) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, "megastep: " + msg);
}

ffi::Error expect(const char* name, const std::vector<int64_t>& core,
                  std::initializer_list<int64_t> want) {
  std::vector<int64_t> w(want);
  if (core != w) {
    std::string got, exp;
    for (auto x : core) got += std::to_string(x) + ",";
    for (auto x : w) exp += std::to_string(x) + ",";
    return invalid(std::string(name) + ": core shape (" + got + ") where (" + exp + ") was expected");
  }
  return ffi::Error::Success();
}

#define MS_RETURN_IF_ERROR(expr)           \
  do {                                     \
    ffi::Error _e = (expr);                \
    if (_e.failure()) return _e;           \
  } while (0)

// The scenery operands every kernel reads, with their shapes checked.
struct ScenerySizes {
  int64_t E, L, NL, T;
};

// Checks the output's batch axes equal the broadcast batch axes.
template <class B>
ffi::Error expect_batch(const char* name, B& out, const Batching& b, int core) {
  auto d = dims_vec(*out);
  if ((int)d.size() != b.n_axes + core) return invalid(std::string(name) + ": wrong rank");
  for (int ax = 0; ax < b.n_axes; ++ax)
    if (d[ax] != b.dims[ax]) return invalid(std::string(name) + ": wrong batch axes");
  return ffi::Error::Success();
}

Env make_env(const Batching& b, int64_t flat, int64_t e, const ScenerySizes& s,
             const float* lines, const int32_t* n_lines, const float* lights,
             const int32_t* n_lights, const float* textures, const int32_t* starts,
             const int32_t* widths, const float* baked, int n_agent_lines,
             const float* agent_lines, const int ops[8]) {
  // ops: operand indices of lines, n_lines, lights, n_lights, textures, starts, widths, baked
  Env env;
  env.lines = lines + (b.block(ops[0], flat) * s.E + e) * s.L * 4;
  env.n_agent_lines = n_agent_lines;
  env.agent_lines = agent_lines;
  int nl = n_lines[b.block(ops[1], flat) * s.E + e];
  env.n_lines = std::max(n_agent_lines, std::min<int>(nl, (int)s.L));
  env.lights = lights + (b.block(ops[2], flat) * s.E + e) * s.NL * 3;
  env.n_lights = std::max(0, std::min<int>(n_lights[b.block(ops[3], flat) * s.E + e], (int)s.NL));
  env.textures = textures ? textures + (b.block(ops[4], flat) * s.E + e) * s.T * 3 : nullptr;
  env.texel_starts = starts + (b.block(ops[5], flat) * s.E + e) * s.L;
  env.texel_widths = widths + (b.block(ops[6], flat) * s.E + e) * s.L;
  env.baked = baked ? baked + (b.block(ops[7], flat) * s.E + e) * s.T : nullptr;
  env.n_texel_capacity = (int)s.T;
  return env;
}

// ---------------------------------------------------------------------------------------
ffi::Error RenderImpl(ffi::ThreadPool pool, F32 lines, S32 n_lines, F32 lights, S32 n_lights,
                      F32 textures, S32 texel_starts, S32 texel_widths, F32 baked, F32 model,
                      F32 angles, F32 positions, F32 fov, F32 radius, S32Out indices,
                      F32Out locations, F32Out dots, F32Out distances, F32Out screen) {
  const char* names[] = {"lines", "n_lines", "lights", "n_lights", "textures", "texel_starts",
                         "texel_widths", "baked", "model", "angles", "positions", "fov", "radius"};
  // Core ranks include the env axis E: everything before it is a vmap batch axis.
  const int core_ranks[] = {4, 1, 3, 1, 3, 2, 2, 2, 3, 2, 3, 0, 0};
  std::vector<std::vector<int64_t>> dims = {
      dims_vec(lines),    dims_vec(n_lines),      dims_vec(lights),       dims_vec(n_lights),
      dims_vec(textures), dims_vec(texel_starts), dims_vec(texel_widths), dims_vec(baked),
      dims_vec(model),    dims_vec(angles),       dims_vec(positions),    dims_vec(fov),
      dims_vec(radius)};
  Batching b;
  std::string err = megastep::make_batching(b, 13, core_ranks, names,
                                            [&](int op) { return dims[op]; });
  if (!err.empty()) return invalid(err);

  auto cl = core_dims(dims[0], 4);
  int64_t E = cl[0], L = cl[1];
  auto cli = core_dims(dims[2], 3);
  int64_t NL = cli[1];
  auto ct = core_dims(dims[4], 3);
  int64_t T = ct[1];
  auto ca = core_dims(dims[9], 2);
  int64_t A = ca[1];
  MS_RETURN_IF_ERROR(expect("lines", cl, {E, L, 2, 2}));
  MS_RETURN_IF_ERROR(expect("n_lines", core_dims(dims[1], 1), {E}));
  MS_RETURN_IF_ERROR(expect("lights", cli, {E, NL, 3}));
  MS_RETURN_IF_ERROR(expect("n_lights", core_dims(dims[3], 1), {E}));
  MS_RETURN_IF_ERROR(expect("textures", ct, {E, T, 3}));
  MS_RETURN_IF_ERROR(expect("texel_starts", core_dims(dims[5], 2), {E, L}));
  MS_RETURN_IF_ERROR(expect("texel_widths", core_dims(dims[6], 2), {E, L}));
  MS_RETURN_IF_ERROR(expect("baked", core_dims(dims[7], 2), {E, T}));
  MS_RETURN_IF_ERROR(expect("model", core_dims(dims[8], 3), {megastep::kModelLines, 2, 2}));
  MS_RETURN_IF_ERROR(expect("angles", ca, {E, A}));
  MS_RETURN_IF_ERROR(expect("positions", core_dims(dims[10], 3), {E, A, 2}));
  if (L < A * megastep::kModelLines) return invalid("lines: fewer lines than agent model lines");
  auto od = dims_vec(*indices);
  int64_t R = od.back();
  MS_RETURN_IF_ERROR(expect_batch("indices", indices, b, 3));
  MS_RETURN_IF_ERROR(expect_batch("screen", screen, b, 4));

  ScenerySizes s{E, L, NL, T};
  const int ops[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  const float* lines_p = lines.typed_data();
  const int32_t* n_lines_p = n_lines.typed_data();
  const float* lights_p = lights.typed_data();
  const int32_t* n_lights_p = n_lights.typed_data();
  const float* tex_p = textures.typed_data();
  const int32_t* starts_p = texel_starts.typed_data();
  const int32_t* widths_p = texel_widths.typed_data();
  const float* baked_p = baked.typed_data();
  const float* model_p = model.typed_data();
  const float* angles_p = angles.typed_data();
  const float* pos_p = positions.typed_data();
  const float* fov_p = fov.typed_data();
  const float* radius_p = radius.typed_data();
  int32_t* idx_o = indices->typed_data();
  float* loc_o = locations->typed_data();
  float* dot_o = dots->typed_data();
  float* dist_o = distances->typed_data();
  float* scr_o = screen->typed_data();
  int n_agent_lines = (int)(A * megastep::kModelLines);

  parallel_for(pool, b.size * E, b.size * E * A * R * L, [&](int64_t task) {
    int64_t flat = task / E, e = task % E;
    const float* ang = angles_p + (b.block(9, flat) * E + e) * A;
    const float* pos = pos_p + (b.block(10, flat) * E + e) * A * 2;
    const float* mdl = model_p + b.block(8, flat) * megastep::kModelLines * 4;
    // Per-thread scratch, reused across tasks: drawn agent lines and one camera's rays.
    thread_local std::vector<float> drawn, ux, uy, near_s, best_s, best_t;
    thread_local std::vector<int> best_i;
    drawn.resize(n_agent_lines * 4);
    for (auto* v : {&ux, &uy, &near_s, &best_s, &best_t}) v->resize(R);
    best_i.resize(R);
    megastep::draw_agents(mdl, pos, ang, (int)A, drawn.data());
    Env env = make_env(b, flat, e, s, lines_p, n_lines_p, lights_p, n_lights_p, tex_p,
                       starts_p, widths_p, baked_p, n_agent_lines, drawn.data(), ops);
    float fv = fov_p[b.block(11, flat)];
    float rad = radius_p[b.block(12, flat)];
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
  const char* names[] = {"lines", "n_lines", "positions", "velocity", "angles", "angvelocity",
                         "fps", "radius", "restitution"};
  const int ranks[] = {4, 1, 3, 3, 2, 2, 0, 0, 0};
  std::vector<std::vector<int64_t>> dims = {
      dims_vec(lines), dims_vec(n_lines), dims_vec(positions), dims_vec(velocity),
      dims_vec(angles), dims_vec(angvelocity), dims_vec(fps), dims_vec(radius),
      dims_vec(restitution)};
  Batching b;
  std::string err = megastep::make_batching(b, 9, ranks, names, [&](int op) { return dims[op]; });
  if (!err.empty()) return invalid(err);
  auto cl = core_dims(dims[0], 4);
  int64_t E = cl[0], L = cl[1];
  auto ca = core_dims(dims[4], 2);
  int64_t A = ca[1];
  MS_RETURN_IF_ERROR(expect("lines", cl, {E, L, 2, 2}));
  MS_RETURN_IF_ERROR(expect("n_lines", core_dims(dims[1], 1), {E}));
  MS_RETURN_IF_ERROR(expect("positions", core_dims(dims[2], 3), {E, A, 2}));
  MS_RETURN_IF_ERROR(expect("velocity", core_dims(dims[3], 3), {E, A, 2}));
  MS_RETURN_IF_ERROR(expect("angles", ca, {E, A}));
  MS_RETURN_IF_ERROR(expect("angvelocity", core_dims(dims[5], 2), {E, A}));
  MS_RETURN_IF_ERROR(expect_batch("progress", progress_out, b, 2));
  if (L < A * megastep::kModelLines) return invalid("lines: fewer lines than agent model lines");
  if (collision < megastep::kStop || collision > megastep::kBounce)
    return invalid("collision: expected 0 (stop), 1 (slide) or 2 (bounce)");

  const float* lines_p = lines.typed_data();
  const int32_t* n_lines_p = n_lines.typed_data();
  int n_agent_lines = (int)(A * megastep::kModelLines);

  parallel_for(pool, b.size * E, b.size * E * A * (A + L) * 8, [&](int64_t task) {
    int64_t flat = task / E, e = task % E;
    Env env{};
    env.lines = lines_p + (b.block(0, flat) * E + e) * L * 4;
    env.n_agent_lines = n_agent_lines;
    env.n_lines = std::max(n_agent_lines, std::min<int>(n_lines_p[b.block(1, flat) * E + e], (int)L));
    const float* pos = positions.typed_data() + (b.block(2, flat) * E + e) * A * 2;
    const float* vel = velocity.typed_data() + (b.block(3, flat) * E + e) * A * 2;
    const float* ang = angles.typed_data() + (b.block(4, flat) * E + e) * A;
    const float* angv = angvelocity.typed_data() + (b.block(5, flat) * E + e) * A;
    float f = fps.typed_data()[b.block(6, flat)];
    float rad = radius.typed_data()[b.block(7, flat)];
    float rest = restitution.typed_data()[b.block(8, flat)];
    std::vector<float> motions(A * 2);
    for (int64_t i = 0; i < 2 * A; ++i) motions[i] = vel[i] / f;
    int64_t out = (flat * E + e) * A;
    for (int64_t a = 0; a < A; ++a) {
      megastep::AgentMotion m = megastep::step_agent(env, pos, motions.data(), vel, ang, angv,
                                                     (int)A, (int)a, f, rad, collision, rest);
      positions_out->typed_data()[2 * (out + a)] = m.position.x;
      positions_out->typed_data()[2 * (out + a) + 1] = m.position.y;
      velocity_out->typed_data()[2 * (out + a)] = m.velocity.x;
      velocity_out->typed_data()[2 * (out + a) + 1] = m.velocity.y;
      angles_out->typed_data()[out + a] = m.angle;
      angvelocity_out->typed_data()[out + a] = m.angvelocity;
      progress_out->typed_data()[out + a] = m.progress;
    }
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------
ffi::Error BakeImpl(ffi::ThreadPool pool, F32 lines, S32 n_lines, F32 lights, S32 n_lights,
                    S32 texel_starts, S32 texel_widths, int32_t n_agents, F32Out baked) {
  const char* names[] = {"lines", "n_lines", "lights", "n_lights", "texel_starts", "texel_widths"};
  const int ranks[] = {4, 1, 3, 1, 2, 2};
  std::vector<std::vector<int64_t>> dims = {dims_vec(lines),    dims_vec(n_lines),
                                            dims_vec(lights),   dims_vec(n_lights),
                                            dims_vec(texel_starts), dims_vec(texel_widths)};
  Batching b;
  std::string err = megastep::make_batching(b, 6, ranks, names, [&](int op) { return dims[op]; });
  if (!err.empty()) return invalid(err);
  auto cl = core_dims(dims[0], 4);
  int64_t E = cl[0], L = cl[1];
  auto cli = core_dims(dims[2], 3);
  int64_t NL = cli[1];
  auto od = dims_vec(*baked);
  int64_t T = od.back();
  MS_RETURN_IF_ERROR(expect("lights", cli, {E, NL, 3}));
  MS_RETURN_IF_ERROR(expect("n_lines", core_dims(dims[1], 1), {E}));
  MS_RETURN_IF_ERROR(expect("n_lights", core_dims(dims[3], 1), {E}));
  MS_RETURN_IF_ERROR(expect("texel_starts", core_dims(dims[4], 2), {E, L}));
  MS_RETURN_IF_ERROR(expect("texel_widths", core_dims(dims[5], 2), {E, L}));
  MS_RETURN_IF_ERROR(expect_batch("baked", baked, b, 2));
  int n_agent_lines = n_agents * megastep::kModelLines;
  if (n_agents < 0 || L < n_agent_lines) return invalid("n_agents: more model lines than lines");

  float* out = baked->typed_data();
  std::fill(out, out + b.size * E * T, 1.f);
  ScenerySizes s{E, L, NL, T};
  const int ops[8] = {0, 1, 2, 3, 0, 4, 5, 0};
  // One task per (batch member, env, line): plans have few envs but many lines.
  parallel_for(pool, b.size * E * L, b.size * E * T * (NL + 1) * L, [&](int64_t task) {
    int64_t j = task % L, fe = task / L;
    int64_t flat = fe / E, e = fe % E;
    Env env = make_env(b, flat, e, s, lines.typed_data(), n_lines.typed_data(),
                       lights.typed_data(), n_lights.typed_data(), nullptr,
                       texel_starts.typed_data(), texel_widths.typed_data(), nullptr,
                       n_agent_lines, nullptr, ops);
    if (j < n_agent_lines || j >= env.n_lines) return;
    int w = env.texel_widths[j], start = env.texel_starts[j];
    if (w < 1 || start < 0 || start > T - w) return;
    float* dst = out + (flat * E + e) * T + start;
    for (int k = 0; k < w; ++k) dst[k] = megastep::bake_texel(env, (int)j, k, w);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepRenderCpu, RenderImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<S32>().Arg<F32>().Arg<S32>()
                                  .Arg<F32>().Arg<S32>().Arg<S32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<S32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepPhysicsCpu, PhysicsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<S32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Attr<int32_t>("collision")
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepBakeCpu, BakeImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<S32>().Arg<F32>().Arg<S32>()
                                  .Arg<S32>().Arg<S32>()
                                  .Attr<int32_t>("n_agents")
                                  .Ret<F32>());

namespace py = pybind11;

template <typename T>
py::capsule capsule(T* fn) {
  static_assert(std::is_invocable_r_v<XLA_FFI_Error*, T, XLA_FFI_CallFrame*>,
                "an XLA FFI handler must have the XLA FFI signature");
  return py::capsule(reinterpret_cast<void*>(fn));
}

PYBIND11_MODULE(_megastep_cpu, m) {
  m.doc() = "megastep_jax CPU kernels as XLA FFI handlers";
  m.def("registrations", []() {
    py::dict d;
    d["megastep_render"] = capsule(MegastepRenderCpu);
    d["megastep_physics"] = capsule(MegastepPhysicsCpu);
    d["megastep_bake"] = capsule(MegastepBakeCpu);
    return d;
  });
}
