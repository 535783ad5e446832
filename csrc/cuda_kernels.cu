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
#include "ffi_common.h"
#include "operands.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using megastep::Batching;
using megastep::Env;
using megastep::Vec;

namespace {

using namespace megastep_ffi;

ffi::Error launched(const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("megastep: ") + what + ": " +
                                                     cudaGetErrorString(e));
  return ffi::Error::Success();
}

using megastep::SceneryPtrs;
using megastep::Sizes;

// One block per (batch member, env, agent); threads stride over pixels. The env's agent
// models are drawn once per block into shared memory.
__global__ void render_kernel(Batching b, Sizes s, SceneryPtrs p, const float* model,
                              const float* angles, const float* positions, const float* fov,
                              const float* radius, int traversal, int32_t* indices,
                              float* locations, float* dots, float* distances, float* screen) {
  using namespace megastep;
  extern __shared__ float drawn[];
  int64_t block = blockIdx.x;
  int64_t a = block % s.A, fe = block / s.A;
  int64_t e = fe % s.E, flat = fe / s.E;
  const float* ang = angles + (b.block(kAngles, flat) * s.E + e) * s.A;
  const float* pos = positions + (b.block(kPositions, flat) * s.E + e) * s.A * 2;
  const float* mdl = model + b.block(kModel, flat) * kModelLines * 4;
  if (threadIdx.x == 0) draw_agents(mdl, pos, ang, (int)s.A, drawn);
  __syncthreads();
  Env env = env_at(b, flat, e, s, p, (int)(s.A * kModelLines), drawn);
  // the grid walked per ray (cast_grid); without one, or when asked, every line in order
  Grid grid;
  if (traversal != kTraverseBrute) grid = grid_at(b, flat, e, s, p);
  float fv = fov[b.block(kFov, flat)];
  float rad = radius[b.block(kRadius, flat)];
  bool valid = fv > 0.f && fv < 180.f && rad >= 0.f;
  float tan_half = tanf(fv * (kPi / 360.f));
  float rd = ang[a] * (kPi / 180.f);
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
    Vec u = pixel_ray((int)r, (int)s.R, tan_half, c, sn);
    Pixel px = shade(env, u, cast_grid(env, grid, pt, u, near_plane(u, rad)));
    indices[o] = px.index;
    locations[o] = px.location;
    dots[o] = px.dot;
    distances[o] = px.distance;
    for (int k = 0; k < 3; ++k) screen[3 * o + k] = px.rgb[k];
  }
}

ffi::Error RenderImpl(cudaStream_t stream, F32 lines, S32 n_lines, F32 lights, S32 n_lights,
                      F32 textures, S32 texel_starts, S32 texel_widths, F32 baked, F32 model,
                      F32 angles, F32 positions, F32 fov, F32 radius, S32 grid_cells,
                      S32 grid_lines, F32 grid_origin, S32 grid_dims, int32_t traversal,
                      S32Out indices, F32Out locations, F32Out dots, F32Out distances,
                      F32Out screen) {
  Batching b;
  Sizes s;
  std::string err = megastep::render_layout(
      {dims_of(lines), dims_of(n_lines), dims_of(lights), dims_of(n_lights), dims_of(textures),
       dims_of(texel_starts), dims_of(texel_widths), dims_of(baked), dims_of(model),
       dims_of(angles), dims_of(positions), dims_of(fov), dims_of(radius), dims_of(grid_cells),
       dims_of(grid_lines), dims_of(grid_origin), dims_of(grid_dims)},
      dims_of(*indices), b, s);
  if (!err.empty()) return invalid(err);
  if (traversal < megastep::kTraverseGrid || traversal > megastep::kTraverseRays)
    return invalid("traversal: expected 0 (grid), 1 (brute force) or 2 (grid, per ray)");
  int64_t blocks = b.size * s.E * s.A;
  if (blocks == 0 || s.R == 0) return ffi::Error::Success();
  SceneryPtrs p;
  p.lines = lines.typed_data(); p.n_lines = n_lines.typed_data();
  p.lights = lights.typed_data(); p.n_lights = n_lights.typed_data();
  p.textures = textures.typed_data(); p.starts = texel_starts.typed_data();
  p.widths = texel_widths.typed_data(); p.baked = baked.typed_data();
  p.grid_cells = grid_cells.typed_data(); p.grid_lines = grid_lines.typed_data();
  p.grid_origin = grid_origin.typed_data(); p.grid_dims = grid_dims.typed_data();
  int threads = (int)std::min<int64_t>(256, ((s.R + 31) / 32) * 32);
  size_t shared = (size_t)s.A * megastep::kModelLines * 4 * sizeof(float);
  render_kernel<<<(unsigned)blocks, threads, shared, stream>>>(
      b, s, p, model.typed_data(), angles.typed_data(), positions.typed_data(), fov.typed_data(),
      radius.typed_data(), traversal, indices->typed_data(), locations->typed_data(), dots->typed_data(),
      distances->typed_data(), screen->typed_data());
  return launched("render");
}

// One block per (batch member, env); threads stride over agents.
__global__ void physics_kernel(Batching b, Sizes s, SceneryPtrs p, const float* positions,
                               const float* velocity, const float* angles,
                               const float* angvelocity, const float* fps, const float* radius,
                               const float* restitution, int collision, float* pos_out,
                               float* vel_out, float* ang_out, float* angv_out, float* progress) {
  using namespace megastep;
  extern __shared__ float motions[];
  int64_t fe = blockIdx.x;
  int64_t e = fe % s.E, flat = fe / s.E;
  Env env = env_at(b, flat, e, s, p, (int)(s.A * kModelLines), nullptr);
  auto at = [&](int op) { return b.block(op, flat) * s.E + e; };
  const float* pos = positions + at(kPPositions) * s.A * 2;
  const float* vel = velocity + at(kPVelocity) * s.A * 2;
  const float* ang = angles + at(kPAngles) * s.A;
  const float* angv = angvelocity + at(kPAngvelocity) * s.A;
  float f = fps[b.block(kPFps, flat)];
  float rad = radius[b.block(kPRadius, flat)];
  float rest = restitution[b.block(kPRestitution, flat)];
  for (int64_t i = threadIdx.x; i < 2 * s.A; i += blockDim.x) motions[i] = vel[i] / f;
  __syncthreads();
  int64_t out = (flat * s.E + e) * s.A;
  for (int64_t a = threadIdx.x; a < s.A; a += blockDim.x) {
    AgentMotion m = step_agent(env, pos, motions, vel, ang, angv, (int)s.A, (int)a, f, rad,
                               collision, rest);
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
  Batching b;
  Sizes s;
  std::string err = megastep::physics_layout(
      {dims_of(lines), dims_of(n_lines), dims_of(positions), dims_of(velocity), dims_of(angles),
       dims_of(angvelocity), dims_of(fps), dims_of(radius), dims_of(restitution)},
      dims_of(*progress_out), collision, b, s);
  if (!err.empty()) return invalid(err);
  int64_t blocks = b.size * s.E;
  if (blocks == 0 || s.A == 0) return ffi::Error::Success();
  SceneryPtrs p;
  p.lines = lines.typed_data();
  p.n_lines = n_lines.typed_data();
  int threads = (int)std::min<int64_t>(256, ((s.A + 31) / 32) * 32);
  physics_kernel<<<(unsigned)blocks, threads, 2 * s.A * sizeof(float), stream>>>(
      b, s, p, positions.typed_data(), velocity.typed_data(), angles.typed_data(),
      angvelocity.typed_data(), fps.typed_data(), radius.typed_data(), restitution.typed_data(),
      collision, positions_out->typed_data(), velocity_out->typed_data(),
      angles_out->typed_data(), angvelocity_out->typed_data(), progress_out->typed_data());
  return launched("physics");
}

__global__ void fill_kernel(float* x, int64_t n, float v) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    x[i] = v;
}

// One block per (batch member, env, line); threads stride over the line's texels.
__global__ void bake_kernel(Batching b, Sizes s, SceneryPtrs p, float* baked) {
  int64_t j = blockIdx.x % s.L, fe = blockIdx.x / s.L;
  int64_t e = fe % s.E, flat = fe / s.E;
  Env env = megastep::env_at(b, flat, e, s, p, (int)(s.A * megastep::kModelLines), nullptr);
  if (j < env.n_agent_lines || j >= env.n_lines) return;
  int w = env.texel_widths[j], start = env.texel_starts[j];
  if (w < 1 || start < 0 || start > s.T - w) return;
  float* dst = baked + (flat * s.E + e) * s.T + start;
  for (int k = threadIdx.x; k < w; k += blockDim.x) dst[k] = megastep::bake_texel(env, (int)j, k, w);
}

ffi::Error BakeImpl(cudaStream_t stream, F32 lines, S32 n_lines, F32 lights, S32 n_lights,
                    S32 texel_starts, S32 texel_widths, int32_t n_agents, F32Out baked) {
  Batching b;
  Sizes s;
  std::string err = megastep::bake_layout(
      {dims_of(lines), dims_of(n_lines), dims_of(lights), dims_of(n_lights),
       dims_of(texel_starts), dims_of(texel_widths)},
      dims_of(*baked), n_agents, b, s);
  if (!err.empty()) return invalid(err);
  int64_t n = b.size * s.E * s.T;
  if (n > 0)
    fill_kernel<<<(unsigned)std::min<int64_t>(1024, (n + 255) / 256), 256, 0, stream>>>(
        baked->typed_data(), n, 1.f);
  SceneryPtrs p = megastep::bake_ptrs(lines.typed_data(), n_lines.typed_data(), lights.typed_data(),
                                      n_lights.typed_data(), texel_starts.typed_data(),
                                      texel_widths.typed_data());
  int64_t blocks = b.size * s.E * s.L;
  if (blocks > 0) bake_kernel<<<(unsigned)blocks, 64, 0, stream>>>(b, s, p, baked->typed_data());
  return launched("bake");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepRenderCuda, RenderImpl, megastep_ffi::render_binding<ffi::PlatformStream<cudaStream_t>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepPhysicsCuda, PhysicsImpl, megastep_ffi::physics_binding<ffi::PlatformStream<cudaStream_t>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepBakeCuda, BakeImpl, megastep_ffi::bake_binding<ffi::PlatformStream<cudaStream_t>>());

PYBIND11_MODULE(_megastep_cuda, m) {
  m.doc() = "megastep_jax CUDA kernels as XLA FFI handlers";
  m.def("registrations", []() {
    return megastep_ffi::registrations(MegastepRenderCuda, MegastepPhysicsCuda, MegastepBakeCuda);
  });
}
