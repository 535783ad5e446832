// CUDA handlers for the bake, physics and render kernels, registered as XLA FFI targets.
//
// Like cpu_kernels.cc these only launch over batch members, envs, agents, pixels and
// texels; every formula is a megastep.h function, the same code the CPU tests exercise.
// Shape checks mirror the CPU handlers and run on the host before any launch.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
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

ffi::Error invalid(const std::string& msg) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, "megastep: " + msg);
}

ffi::Error launched(const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("megastep: ") + what + ": " +
                                                     cudaGetErrorString(e));
  return ffi::Error::Success();
}

template <class B>
std::vector<int64_t> dims_vec(const B& buf) {
  auto d = buf.dimensions();
  return std::vector<int64_t>(d.begin(), d.end());
}

std::vector<int64_t> core_dims(const std::vector<int64_t>& dims, int core) {
  return std::vector<int64_t>(dims.end() - core, dims.end());
}

ffi::Error expect(const char* name, const std::vector<int64_t>& core,
                  std::initializer_list<int64_t> want) {
  if (core != std::vector<int64_t>(want))
    return invalid(std::string(name) + ": core shape does not match the other operands");
  return ffi::Error::Success();
}

#define MS_RETURN_IF_ERROR(expr) \
  do {                           \
    ffi::Error _e = (expr);      \
    if (_e.failure()) return _e; \
  } while (0)

struct Sizes {
  int64_t E, L, NL, T, A, R;
};

struct SceneryPtrs {
  const float* lines;
  const int32_t* n_lines;
  const float* lights;
  const int32_t* n_lights;
  const float* textures;
  const int32_t* starts;
  const int32_t* widths;
  const float* baked;
};

// Operand order shared with the host: lines, n_lines, lights, n_lights, textures,
// texel_starts, texel_widths, baked, model, angles, positions, fov, radius.
__device__ Env device_env(const Batching& b, int64_t flat, int64_t e, const Sizes& s,
                          const SceneryPtrs& p, const float* agent_lines) {
  Env env;
  int n_agent_lines = (int)(s.A * megastep::kModelLines);
  env.lines = p.lines + (b.block(0, flat) * s.E + e) * s.L * 4;
  env.agent_lines = agent_lines;
  env.n_agent_lines = n_agent_lines;
  int nl = p.n_lines[b.block(1, flat) * s.E + e];
  env.n_lines = max(n_agent_lines, min(nl, (int)s.L));
  env.lights = p.lights + (b.block(2, flat) * s.E + e) * s.NL * 3;
  env.n_lights = max(0, min(p.n_lights[b.block(3, flat) * s.E + e], (int)s.NL));
  env.textures = p.textures ? p.textures + (b.block(4, flat) * s.E + e) * s.T * 3 : nullptr;
  env.texel_starts = p.starts + (b.block(5, flat) * s.E + e) * s.L;
  env.texel_widths = p.widths + (b.block(6, flat) * s.E + e) * s.L;
  env.baked = p.baked ? p.baked + (b.block(7, flat) * s.E + e) * s.T : nullptr;
  env.n_texel_capacity = (int)s.T;
  return env;
}

// One block per (batch member, env, agent); threads stride over pixels. The env's agent
// models are drawn once per block into shared memory.
__global__ void render_kernel(Batching b, Sizes s, SceneryPtrs p, const float* model,
                              const float* angles, const float* positions, const float* fov,
                              const float* radius, int32_t* indices, float* locations,
                              float* dots, float* distances, float* screen) {
  extern __shared__ float drawn[];
  int64_t block = blockIdx.x;
  int64_t a = block % s.A, fe = block / s.A;
  int64_t e = fe % s.E, flat = fe / s.E;
  const float* ang = angles + (b.block(9, flat) * s.E + e) * s.A;
  const float* pos = positions + (b.block(10, flat) * s.E + e) * s.A * 2;
  const float* mdl = model + b.block(8, flat) * megastep::kModelLines * 4;
  if (threadIdx.x == 0) megastep::draw_agents(mdl, pos, ang, (int)s.A, drawn);
  __syncthreads();
  Env env = device_env(b, flat, e, s, p, drawn);
  float fv = fov[b.block(11, flat)];
  float rad = radius[b.block(12, flat)];
  bool valid = fv > 0.f && fv < 180.f && rad >= 0.f;
  float tan_half = tanf(fv * (megastep::kPi / 360.f));
  float rd = ang[a] * (megastep::kPi / 180.f);
  float c = cosf(rd), sn = sinf(rd);
  Vec pt = {pos[2 * a], pos[2 * a + 1]};
  int64_t base = ((flat * s.E + e) * s.A + a) * s.R;
  for (int64_t r = threadIdx.x; r < s.R; r += blockDim.x) {
    int64_t o = base + r;
    if (!valid) {
      indices[o] = -1;
      locations[o] = dots[o] = distances[o] = NAN;
      screen[3 * o] = screen[3 * o + 1] = screen[3 * o + 2] = NAN;
      continue;
    }
    Vec u = megastep::pixel_ray((int)r, (int)s.R, tan_half, c, sn);
    megastep::Pixel px = megastep::render_pixel(env, pt, u, rad);
    indices[o] = px.index;
    locations[o] = px.location;
    dots[o] = px.dot;
    distances[o] = px.distance;
    for (int k = 0; k < 3; ++k) screen[3 * o + k] = px.rgb[k];
  }
}

ffi::Error RenderImpl(cudaStream_t stream, F32 lines, S32 n_lines, F32 lights, S32 n_lights,
                      F32 textures, S32 texel_starts, S32 texel_widths, F32 baked, F32 model,
                      F32 angles, F32 positions, F32 fov, F32 radius, S32Out indices,
                      F32Out locations, F32Out dots, F32Out distances, F32Out screen) {
  const char* names[] = {"lines", "n_lines", "lights", "n_lights", "textures", "texel_starts",
                         "texel_widths", "baked", "model", "angles", "positions", "fov", "radius"};
  const int core_ranks[] = {4, 1, 3, 1, 3, 2, 2, 2, 3, 2, 3, 0, 0};
  std::vector<std::vector<int64_t>> dims = {
      dims_vec(lines),    dims_vec(n_lines),      dims_vec(lights),       dims_vec(n_lights),
      dims_vec(textures), dims_vec(texel_starts), dims_vec(texel_widths), dims_vec(baked),
      dims_vec(model),    dims_vec(angles),       dims_vec(positions),    dims_vec(fov),
      dims_vec(radius)};
  Batching b;
  std::string err = megastep::make_batching(b, 13, core_ranks, names, [&](int op) { return dims[op]; });
  if (!err.empty()) return invalid(err);
  auto cl = core_dims(dims[0], 4);
  auto ca = core_dims(dims[9], 2);
  Sizes s{cl[0], cl[1], core_dims(dims[2], 3)[1], core_dims(dims[4], 3)[1], ca[1],
          dims_vec(*indices).back()};
  MS_RETURN_IF_ERROR(expect("n_lines", core_dims(dims[1], 1), {s.E}));
  MS_RETURN_IF_ERROR(expect("lights", core_dims(dims[2], 3), {s.E, s.NL, 3}));
  MS_RETURN_IF_ERROR(expect("n_lights", core_dims(dims[3], 1), {s.E}));
  MS_RETURN_IF_ERROR(expect("textures", core_dims(dims[4], 3), {s.E, s.T, 3}));
  MS_RETURN_IF_ERROR(expect("texel_starts", core_dims(dims[5], 2), {s.E, s.L}));
  MS_RETURN_IF_ERROR(expect("texel_widths", core_dims(dims[6], 2), {s.E, s.L}));
  MS_RETURN_IF_ERROR(expect("baked", core_dims(dims[7], 2), {s.E, s.T}));
  MS_RETURN_IF_ERROR(expect("model", core_dims(dims[8], 3), {megastep::kModelLines, 2, 2}));
  MS_RETURN_IF_ERROR(expect("positions", core_dims(dims[10], 3), {s.E, s.A, 2}));
  if (s.L < s.A * megastep::kModelLines) return invalid("lines: fewer lines than agent model lines");
  int64_t blocks = b.size * s.E * s.A;
  if (blocks == 0 || s.R == 0) return ffi::Error::Success();
  SceneryPtrs p{lines.typed_data(),  n_lines.typed_data(),      lights.typed_data(),
                n_lights.typed_data(), textures.typed_data(),   texel_starts.typed_data(),
                texel_widths.typed_data(), baked.typed_data()};
  int threads = (int)std::min<int64_t>(256, ((s.R + 31) / 32) * 32);
  size_t shared = (size_t)s.A * megastep::kModelLines * 4 * sizeof(float);
  render_kernel<<<(unsigned)blocks, threads, shared, stream>>>(
      b, s, p, model.typed_data(), angles.typed_data(), positions.typed_data(), fov.typed_data(),
      radius.typed_data(), indices->typed_data(), locations->typed_data(), dots->typed_data(),
      distances->typed_data(), screen->typed_data());
  return launched("render");
}

// One block per (batch member, env); one thread per agent, striding.
__global__ void physics_kernel(Batching b, Sizes s, const float* lines, const int32_t* n_lines,
                               const float* positions, const float* velocity, const float* angles,
                               const float* angvelocity, const float* fps, const float* radius,
                               const float* restitution, int collision, float* pos_out,
                               float* vel_out, float* ang_out, float* angv_out, float* progress) {
  extern __shared__ float motions[];
  int64_t fe = blockIdx.x;
  int64_t e = fe % s.E, flat = fe / s.E;
  int n_agent_lines = (int)(s.A * megastep::kModelLines);
  Env env{};
  env.lines = lines + (b.block(0, flat) * s.E + e) * s.L * 4;
  env.n_agent_lines = n_agent_lines;
  env.n_lines = max(n_agent_lines, min(n_lines[b.block(1, flat) * s.E + e], (int)s.L));
  const float* pos = positions + (b.block(2, flat) * s.E + e) * s.A * 2;
  const float* vel = velocity + (b.block(3, flat) * s.E + e) * s.A * 2;
  const float* ang = angles + (b.block(4, flat) * s.E + e) * s.A;
  const float* angv = angvelocity + (b.block(5, flat) * s.E + e) * s.A;
  float f = fps[b.block(6, flat)];
  float rad = radius[b.block(7, flat)];
  float rest = restitution[b.block(8, flat)];
  for (int64_t i = threadIdx.x; i < 2 * s.A; i += blockDim.x) motions[i] = vel[i] / f;
  __syncthreads();
  int64_t out = (flat * s.E + e) * s.A;
  for (int64_t a = threadIdx.x; a < s.A; a += blockDim.x) {
    megastep::AgentMotion m = megastep::step_agent(env, pos, motions, vel, ang, angv, (int)s.A,
                                                   (int)a, f, rad, collision, rest);
    pos_out[2 * (out + a)] = m.position.x;
    pos_out[2 * (out + a) + 1] = m.position.y;
    vel_out[2 * (out + a)] = m.velocity.x;
    vel_out[2 * (out + a) + 1] = m.velocity.y;
    ang_out[out + a] = m.angle;
    angv_out[out + a] = m.angvelocity;
    progress[out + a] = m.progress;
  }
}

ffi::Error PhysicsImpl(cudaStream_t stream, F32 lines, S32 n_lines, F32 positions, F32 velocity,
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
  auto ca = core_dims(dims[4], 2);
  Sizes s{cl[0], cl[1], 0, 0, ca[1], 0};
  MS_RETURN_IF_ERROR(expect("positions", core_dims(dims[2], 3), {s.E, s.A, 2}));
  MS_RETURN_IF_ERROR(expect("velocity", core_dims(dims[3], 3), {s.E, s.A, 2}));
  MS_RETURN_IF_ERROR(expect("angvelocity", core_dims(dims[5], 2), {s.E, s.A}));
  if (s.L < s.A * megastep::kModelLines) return invalid("lines: fewer lines than agent model lines");
  if (collision < megastep::kStop || collision > megastep::kBounce)
    return invalid("collision: expected 0 (stop), 1 (slide) or 2 (bounce)");
  int64_t blocks = b.size * s.E;
  if (blocks == 0 || s.A == 0) return ffi::Error::Success();
  int threads = (int)std::min<int64_t>(256, ((s.A + 31) / 32) * 32);
  physics_kernel<<<(unsigned)blocks, threads, 2 * s.A * sizeof(float), stream>>>(
      b, s, lines.typed_data(), n_lines.typed_data(), positions.typed_data(),
      velocity.typed_data(), angles.typed_data(), angvelocity.typed_data(), fps.typed_data(),
      radius.typed_data(), restitution.typed_data(), collision, positions_out->typed_data(),
      velocity_out->typed_data(), angles_out->typed_data(), angvelocity_out->typed_data(),
      progress_out->typed_data());
  return launched("physics");
}

__global__ void fill_kernel(float* x, int64_t n, float v) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    x[i] = v;
}

// One block per (batch member, env, line); threads stride over the line's texels.
__global__ void bake_kernel(Batching b, Sizes s, SceneryPtrs p, int n_agents, float* baked) {
  int64_t j = blockIdx.x % s.L, fe = blockIdx.x / s.L;
  int64_t e = fe % s.E, flat = fe / s.E;
  Sizes sa = s;
  sa.A = n_agents;
  Env env = device_env(b, flat, e, sa, p, nullptr);
  if (j < env.n_agent_lines || j >= env.n_lines) return;
  int w = env.texel_widths[j], start = env.texel_starts[j];
  if (w < 1 || start < 0 || start > s.T - w) return;
  float* dst = baked + (flat * s.E + e) * s.T + start;
  for (int k = threadIdx.x; k < w; k += blockDim.x) dst[k] = megastep::bake_texel(env, (int)j, k, w);
}

ffi::Error BakeImpl(cudaStream_t stream, F32 lines, S32 n_lines, F32 lights, S32 n_lights,
                    S32 texel_starts, S32 texel_widths, int32_t n_agents, F32Out baked) {
  // Operands are placed at the indices device_env expects; textures and baked are absent.
  const char* names[] = {"lines", "n_lines", "lights", "n_lights", "lines", "texel_starts",
                         "texel_widths"};
  const int ranks[] = {4, 1, 3, 1, 4, 2, 2};
  std::vector<std::vector<int64_t>> dims = {dims_vec(lines),  dims_vec(n_lines),
                                            dims_vec(lights), dims_vec(n_lights),
                                            dims_vec(lines),  dims_vec(texel_starts),
                                            dims_vec(texel_widths)};
  Batching b;
  std::string err = megastep::make_batching(b, 7, ranks, names, [&](int op) { return dims[op]; });
  if (!err.empty()) return invalid(err);
  auto cl = core_dims(dims[0], 4);
  Sizes s{cl[0], cl[1], core_dims(dims[2], 3)[1], dims_vec(*baked).back(), n_agents, 0};
  MS_RETURN_IF_ERROR(expect("texel_starts", core_dims(dims[5], 2), {s.E, s.L}));
  MS_RETURN_IF_ERROR(expect("texel_widths", core_dims(dims[6], 2), {s.E, s.L}));
  if (n_agents < 0 || s.L < (int64_t)n_agents * megastep::kModelLines)
    return invalid("n_agents: more model lines than lines");
  int64_t n = b.size * s.E * s.T;
  if (n > 0) fill_kernel<<<(unsigned)std::min<int64_t>(1024, (n + 255) / 256), 256, 0, stream>>>(
      baked->typed_data(), n, 1.f);
  int64_t blocks = b.size * s.E * s.L;
  SceneryPtrs p{lines.typed_data(), n_lines.typed_data(), lights.typed_data(),
                n_lights.typed_data(), nullptr, texel_starts.typed_data(),
                texel_widths.typed_data(), nullptr};
  if (blocks > 0) bake_kernel<<<(unsigned)blocks, 64, 0, stream>>>(b, s, p, n_agents, baked->typed_data());
  return launched("bake");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepRenderCuda, RenderImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<F32>().Arg<S32>().Arg<F32>().Arg<S32>()
                                  .Arg<F32>().Arg<S32>().Arg<S32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<S32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepPhysicsCuda, PhysicsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<F32>().Arg<S32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Attr<int32_t>("collision")
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepBakeCuda, BakeImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<F32>().Arg<S32>().Arg<F32>().Arg<S32>()
                                  .Arg<S32>().Arg<S32>()
                                  .Attr<int32_t>("n_agents")
                                  .Ret<F32>());

namespace py = pybind11;

template <typename T>
py::capsule capsule(T* fn) {
  return py::capsule(reinterpret_cast<void*>(fn));
}

PYBIND11_MODULE(_megastep_cuda, m) {
  m.doc() = "megastep_jax CUDA kernels as XLA FFI handlers";
  m.def("registrations", []() {
    py::dict d;
    d["megastep_render"] = capsule(MegastepRenderCuda);
    d["megastep_physics"] = capsule(MegastepPhysicsCuda);
    d["megastep_bake"] = capsule(MegastepBakeCuda);
    return d;
  });
}
