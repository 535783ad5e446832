// CUDA handlers for the bake, physics, render and seen kernels, registered as XLA FFI targets.
//
// Like cpu_kernels.cc these only launch over batch members, envs, agents, pixels and
// texels; every formula is a megastep.h function, the same code the CPU tests exercise.
// Shape checks mirror the CPU handlers and run on the host before any launch.
//
// Compiled by nvcc this is the CUDA module; compiled by the C++ compiler (cuda_emulated.cc)
// cuda_emulation.h runs the same launches on the CPU, so CI executes this file. CUDA is
// used only through that header: MS_LAUNCH, MS_DYNAMIC_SHARED, StreamCtx and the built-ins.
#include "cuda_emulation.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "batching.h"
#include "draw_cuda.h"
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

// Launch limits. Blocks are numbered along the grid's x axis, then its y axis, so a call may
// have up to 2^31-1 x 65,535 blocks; kernels find theirs with block_index() and return
// where it is past n_blocks (the last row of a 2-D grid is partly empty).
constexpr int64_t kMaxBlocks = megastep_cuda::kMaxGridX * megastep_cuda::kMaxGridYZ;

dim3 grid_for(int64_t n_blocks) {
  int64_t x = std::min<int64_t>(n_blocks, megastep_cuda::kMaxGridX);
  int64_t y = (n_blocks + x - 1) / x;
  return dim3((unsigned)x, (unsigned)y);
}

ffi::Error too_many_blocks(const char* what, int64_t n_blocks) {
  return invalid(std::string(what) + ": " + std::to_string(n_blocks) +
                 " thread blocks, past the CUDA grid's " + std::to_string(kMaxBlocks));
}

__device__ inline int64_t block_index() { return (int64_t)blockIdx.y * gridDim.x + blockIdx.x; }

// Threads per block striding over n items: whole warps, at most 256.
int threads_for(int64_t n) { return (int)std::min<int64_t>(256, std::max<int64_t>(1, (n + 31) / 32) * 32); }

// Per-block scratch past what dynamic shared memory holds goes to global memory.
template <class T>
T* scratch_array(megastep_cuda::Scratch& scratch, int64_t n) {
  auto p = scratch.Allocate(std::max<int64_t>(1, n) * sizeof(T), 16);
  return p ? static_cast<T*>(*p) : nullptr;
}

using megastep::SceneryPtrs;
using megastep::Sizes;

// Render blocks: one per (batch member, env, agent, span of kRenderThreads pixels), a thread
// per pixel. A span is the unit of the camera sweep below: its threads share the staging of
// each ring's lines, and stop when none of its own rays can reach the next ring.
constexpr int kRenderThreads = 64;

// The camera sweep's shared memory (after the drawn agents): per ring batch, each thread's
// cell (first entry, and the inclusive scan of the entry counts), then up to kStage staged
// lines at a time, as the terms every ray of the camera shares.
constexpr int kStage = 128;
struct SweepShared {
  int* cell_lo;      // (kRenderThreads,)
  int* cell_end;     // (kRenderThreads,) inclusive scan of the cells' entry counts
  int* index;        // (kStage,) line index, -1 for an entry that is not a static line
  float* terms;      // (6, kStage): d.x, d.y, w.x, w.y, wd, skip_bound2
};
constexpr size_t kSweepShared = (size_t)(2 * kRenderThreads + 7 * kStage) * 4;
__device__ inline SweepShared sweep_shared(float* base) {
  SweepShared sh;
  sh.cell_lo = reinterpret_cast<int*>(base);
  sh.cell_end = sh.cell_lo + kRenderThreads;
  sh.index = sh.cell_end + kRenderThreads;
  sh.terms = reinterpret_cast<float*>(sh.index + kStage);
  return sh;
}

// The env's agent models as drawn this step: A x 8 lines x 4 floats. Up to this many agents
// per env they are drawn by each render block into its dynamic shared memory; past it, once
// per (batch member, env) into global memory by draw_kernel.
constexpr int64_t kMaxSharedAgents =
    (int64_t)((megastep_cuda::kMaxDynamicShared - kSweepShared) / (megastep::kModelLines * 4 * sizeof(float)));

// One block per (batch member, env); threads stride over agents.
__global__ void draw_kernel(Batching b, Sizes s, int64_t n_blocks, const float* model,
                            const float* angles, const float* positions, float* drawn) {
  using namespace megastep;
  int64_t fe = block_index();
  if (fe >= n_blocks) return;
  int64_t e = fe % s.E, flat = fe / s.E;
  const float* ang = angles + (b.block(kAngles, flat) * s.E + e) * s.A;
  const float* pos = positions + (b.block(kPositions, flat) * s.E + e) * s.A * 2;
  const float* mdl = model + b.block(kModel, flat) * kModelLines * 4;
  for (int64_t a = threadIdx.x; a < s.A; a += blockDim.x)
    draw_agents(mdl, pos + 2 * a, ang + a, 1, drawn + (fe * s.A + a) * kModelLines * 4);
}

// The nearest hits of a span's rays through the grid, the block's threads together (the
// CUDA twin of cpu_kernels.cc cast_grid_camera; megastep.h has the maths). Each thread
// holds one ray (`active` false for the padding past R: it only helps stage). Ring by
// ring: the ring's cells in the span's wedge are numbered by an inclusive scan of their
// entry counts, the block stages kStage entries at a time as line terms in shared memory,
// and every thread tests them all against its ray (a line met twice is harmless for
// nearest_update). The sweep stops before a ring that no active ray can reach. Every
// thread of the block must call it (it holds barriers).
__device__ megastep::Hit sweep_span(const Env& env, const megastep::Grid& g, const megastep::Wedge& wedge,
                                    Vec u, float near_s, bool active, SweepShared sh) {
  using namespace megastep;
  const Vec p = wedge.p;
  const int t = (int)threadIdx.x, T = (int)blockDim.x;
  const float ulen = norm(u);
  float s1 = INFINITY, t1 = 0.f, s2 = INFINITY;
  int i1 = -1;
  if (active)
    for (int j = 0; j < env.n_agent_lines; ++j)
      nearest_update(line_terms(env_line(env, j), p), u.x, u.y, near_s, j, s1, i1, t1, s2);
  const Rings rings = grid_rings(g, p);
  for (int k = rings.k0; k <= rings.kmax; ++k) {
    if (k >= 1 && !__syncthreads_or(active && !(reach_of(s1, ulen) < ring_bound(k, g.cs)))) break;
    const Ring ring = grid_ring(g, rings, k);
    for (int q0 = 0; q0 < ring.n; q0 += T) {
      int lo = 0, hi = 0;
      if (q0 + t < ring.n) {
        int ix, iy;
        ring_cell(ring, q0 + t, ix, iy);
        if (cell_in_wedge(g, ix, iy, wedge)) grid_cell(g, ix, iy, lo, hi);
      }
      sh.cell_lo[t] = lo;
      sh.cell_end[t] = hi - lo;
      __syncthreads();
      for (int off = 1; off < T; off *= 2) {  // inclusive scan (Hillis-Steele)
        int v = t >= off ? sh.cell_end[t - off] : 0;
        __syncthreads();
        sh.cell_end[t] += v;
        __syncthreads();
      }
      const int total = sh.cell_end[T - 1];
      for (int e0 = 0; e0 < total; e0 += kStage) {
        const int n = total - e0 < kStage ? total - e0 : kStage;
        for (int slot = t; slot < n; slot += T) {
          int e = e0 + slot, c = 0, top = T - 1;  // the cell holding entry e
          while (c < top) {
            int mid = (c + top) / 2;
            if (sh.cell_end[mid] > e) top = mid; else c = mid + 1;
          }
          int j = g.lines[sh.cell_lo[c] + e - (c > 0 ? sh.cell_end[c - 1] : 0)];
          if (static_line(env, j)) {
            Line l = load_line(env.lines, j);
            LineTerms lt = line_terms(l, p);
            float* f = sh.terms + slot;
            f[0] = lt.d.x, f[kStage] = lt.d.y, f[2 * kStage] = lt.w.x, f[3 * kStage] = lt.w.y;
            f[4 * kStage] = lt.wd, f[5 * kStage] = skip_bound2(l, p);
          } else {
            j = -1;
          }
          sh.index[slot] = j;
        }
        __syncthreads();
        if (active) {
          for (int slot = 0; slot < n; ++slot) {
            const float* f = sh.terms + slot;
            float reach = reach_of(s1, ulen);
            int j = sh.index[slot];
            if (j < 0 || reach * reach < f[5 * kStage]) continue;
            LineTerms lt = {{f[0], f[kStage]}, {f[2 * kStage], f[3 * kStage]}, f[4 * kStage]};
            nearest_update(lt, u.x, u.y, near_s, j, s1, i1, t1, s2);
          }
        }
        __syncthreads();
      }
      __syncthreads();  // every thread has read the scan before the next batch writes it
    }
  }
  if (active && !resolved(s1, i1, s2)) return cast(env, p, u, near_s);
  return {i1, s1, t1};
}

// One block per (batch member, env, agent, span of pixels); a thread per pixel. The env's
// agent models are drawn once per block into shared memory, or were drawn into
// `drawn_global`. The traversal is the env's: the camera sweep through its grid (`grid`),
// the per-ray DDA (`rays`, cast_grid), or every line.
__global__ void render_kernel(Batching b, Sizes s, int64_t n_blocks, int64_t spans, SceneryPtrs p,
                              const float* model, const float* angles, const float* positions,
                              const float* fov, const float* radius, const float* drawn_global,
                              int traversal, int32_t* indices, float* locations, float* dots,
                              float* distances, float* screen) {
  using namespace megastep;
  MS_DYNAMIC_SHARED(float, shared);
  int64_t block = block_index();
  if (block >= n_blocks) return;
  int64_t span = block % spans, cam = block / spans;
  int64_t a = cam % s.A, fe = cam / s.A;
  int64_t e = fe % s.E, flat = fe / s.E;
  const float* ang = angles + (b.block(kAngles, flat) * s.E + e) * s.A;
  const float* pos = positions + (b.block(kPositions, flat) * s.E + e) * s.A * 2;
  const float* mdl = model + b.block(kModel, flat) * kModelLines * 4;
  const float* drawn = shared;
  if (drawn_global) {
    drawn = drawn_global + fe * s.A * kModelLines * 4;
  } else {  // the same branch for the whole block
    if (threadIdx.x == 0) draw_agents(mdl, pos, ang, (int)s.A, shared);
    __syncthreads();
  }
  const SweepShared sh = sweep_shared(shared + (drawn_global ? 0 : s.A * kModelLines * 4));
  Env env = env_at(b, flat, e, s, p, (int)(s.A * kModelLines), drawn);
  int trav = env_traversal(traversal, env.n_lines, env.n_agent_lines);
  Grid grid;
  if (walks_grid(trav)) grid = grid_at(b, flat, e, s, p);
  float fv = fov[b.block(kFov, flat)];
  float rad = radius[b.block(kRadius, flat)];
  bool valid = fv > 0.f && fv < 180.f && rad >= 0.f;
  float tan_half = tanf(fv * (kPi / 360.f));
  float rd = ang[a] * (kPi / 180.f);
  float c = cosf(rd), sn = sinf(rd);
  Vec pt = {pos[2 * a], pos[2 * a + 1]};
  int64_t r0 = span * blockDim.x, r = r0 + threadIdx.x;
  bool active = r < s.R;
  int64_t o = ((flat * s.E + e) * s.A + a) * s.R + r;
  if (!valid) {  // an fov outside (0, 180) has no camera: NaN rather than clipped
    if (active) {
      indices[o] = -1;
      locations[o] = dots[o] = distances[o] = NAN;
      screen[3 * o] = screen[3 * o + 1] = screen[3 * o + 2] = NAN;
    }
    return;
  }
  Vec u = pixel_ray((int)(active ? r : r0), (int)s.R, tan_half, c, sn);
  float near_s = near_plane(u, rad);
  Hit h = {-1, INFINITY, 0.f};
  if (trav == kTraverseGrid && grid_valid(grid)) {  // the same branch for the whole block
    int r1 = (int)(r0 + blockDim.x < s.R ? r0 + blockDim.x : s.R) - 1;
    h = sweep_span(env, grid, pixels_wedge(pt, c, sn, tan_half, (int)s.R, (int)r0, r1), u, near_s, active,
                   sh);
  } else if (active) {
    h = cast_grid(env, grid, pt, u, near_s);
  }
  if (!active) return;
  Pixel px = shade(env, u, h);
  indices[o] = px.index;
  locations[o] = px.location;
  dots[o] = px.dot;
  distances[o] = px.distance;
  for (int k = 0; k < 3; ++k) screen[3 * o + k] = px.rgb[k];
}

ffi::Error RenderImpl(cudaStream_t stream MEGASTEP_RENDER_PARAMS, megastep_cuda::Scratch scratch) {
  Batching b;
  Sizes s;
  std::string err = megastep::render_layout(
      {MEGASTEP_RENDER_ARGS(MS_DIMS_OF)},
      dims_of(*indices_out), b, s);
  if (!err.empty()) return invalid(err);
  if (!megastep::traversal_known(traversal)) return invalid(MEGASTEP_TRAVERSAL_ERROR);
  if (b.size * s.E * s.A == 0 || s.R == 0) return ffi::Error::Success();
  int threads = (int)std::min<int64_t>(kRenderThreads, (s.R + 31) / 32 * 32);
  int64_t spans = (s.R + threads - 1) / threads;
  int64_t cameras = b.size * s.E * s.A;
  if (cameras > kMaxBlocks / spans) return too_many_blocks("render", cameras * spans);
  int64_t blocks = cameras * spans;
  SceneryPtrs p;
  p.lines = lines.typed_data(); p.n_lines = n_lines.typed_data();
  p.lights = lights.typed_data(); p.n_lights = n_lights.typed_data();
  p.textures = textures.typed_data(); p.starts = texel_starts.typed_data();
  p.widths = texel_widths.typed_data(); p.baked = baked.typed_data();
  p.grid_cells = grid_cells.typed_data(); p.grid_lines = grid_lines.typed_data();
  p.grid_origin = grid_origin.typed_data(); p.grid_dims = grid_dims.typed_data();
  size_t shared = kSweepShared;
  float* drawn = nullptr;
  if (s.A <= kMaxSharedAgents) {
    shared += (size_t)s.A * megastep::kModelLines * 4 * sizeof(float);
  } else {
    int64_t envs = b.size * s.E;
    drawn = scratch_array<float>(scratch, envs * s.A * megastep::kModelLines * 4);
    if (!drawn)
      return ffi::Error(ffi::ErrorCode::kResourceExhausted, "megastep: render: no memory for the drawn agents");
    MS_LAUNCH(draw_kernel, grid_for(envs), threads_for(s.A), 0, stream, b, s, envs,
              model.typed_data(), angles.typed_data(), positions.typed_data(), drawn);
    if (ffi::Error e = launched("render (drawing the agents)"); e.failure()) return e;
  }
  MS_LAUNCH(render_kernel, grid_for(blocks), threads, shared, stream, b, s, blocks, spans, p,
            model.typed_data(), angles.typed_data(), positions.typed_data(), fov.typed_data(),
            radius.typed_data(), drawn, traversal, indices_out->typed_data(), locations_out->typed_data(),
            dots_out->typed_data(), distances_out->typed_data(), screen_out->typed_data());
  return launched("render");
}

// One thread per (batch member, env): an env's contact events are resolved in time order,
// one after another (megastep.h, physics_env). The outputs hold the loop's state; each env
// caches its agents' next wall events in its own slice of a global scratch array.
constexpr int kPhysicsThreads = 64;
__global__ void physics_kernel(Batching b, Sizes s, int64_t n_envs, SceneryPtrs p,
                               const float* positions, const float* velocity,
                               const float* angles, const float* angvelocity, const float* fps,
                               const float* radius, const float* restitution, int collision,
                               float* wall_cache, float* pos_out, float* vel_out,
                               float* ang_out, float* angv_out, float* progress) {
  using namespace megastep;
  int64_t fe = block_index() * (int64_t)blockDim.x + threadIdx.x;
  if (fe >= n_envs) return;
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
  int64_t out = (flat * s.E + e) * s.A;
  physics_env(env, pos, vel, ang, angv, (int)s.A, f, rad, collision, rest, pos_out + 2 * out,
              vel_out + 2 * out, ang_out + out, angv_out + out, progress + out,
              wall_cache + fe * 3 * s.A);
}

ffi::Error PhysicsImpl(cudaStream_t stream MEGASTEP_PHYSICS_PARAMS, megastep_cuda::Scratch scratch) {
  Batching b;
  Sizes s;
  std::string err = megastep::physics_layout(
      {MEGASTEP_PHYSICS_ARGS(MS_DIMS_OF)},
      dims_of(*progress_out), collision, b, s);
  if (!err.empty()) return invalid(err);
  int64_t blocks = b.size * s.E;
  if (blocks == 0 || s.A == 0) return ffi::Error::Success();
  SceneryPtrs p;
  p.lines = lines.typed_data();
  p.n_lines = n_lines.typed_data();
  int64_t grid = (blocks + kPhysicsThreads - 1) / kPhysicsThreads;
  if (grid > kMaxBlocks) return too_many_blocks("physics", grid);
  float* wall_cache = scratch_array<float>(scratch, blocks * 3 * s.A);
  if (!wall_cache) return ffi::Error(ffi::ErrorCode::kResourceExhausted, "megastep: physics: no memory for the wall-event cache");
  MS_LAUNCH(physics_kernel, grid_for(grid), kPhysicsThreads, 0, stream, b, s, blocks, p,
            positions.typed_data(), velocity.typed_data(), angles.typed_data(),
            angvelocity.typed_data(), fps.typed_data(), radius.typed_data(),
            restitution.typed_data(), collision, wall_cache, positions_out->typed_data(),
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
__global__ void bake_kernel(Batching b, Sizes s, int64_t n_blocks, SceneryPtrs p, float* baked) {
  int64_t block = block_index();
  if (block >= n_blocks) return;
  int64_t j = block % s.L, fe = block / s.L;
  int64_t e = fe % s.E, flat = fe / s.E;
  Env env = megastep::env_at(b, flat, e, s, p, (int)(s.A * megastep::kModelLines), nullptr);
  if (j < env.n_agent_lines || j >= env.n_lines) return;
  int w = env.texel_widths[j], start = env.texel_starts[j];
  if (w < 1 || start < 0 || start > s.T - w) return;
  float* dst = baked + (flat * s.E + e) * s.T + start;
  for (int k = threadIdx.x; k < w; k += blockDim.x) dst[k] = megastep::bake_texel(env, (int)j, k, w);
}

ffi::Error BakeImpl(cudaStream_t stream MEGASTEP_BAKE_PARAMS) {
  Batching b;
  Sizes s;
  std::string err = megastep::bake_layout(
      {MEGASTEP_BAKE_ARGS(MS_DIMS_OF)},
      dims_of(*baked_out), n_agents, b, s);
  if (!err.empty()) return invalid(err);
  int64_t n = b.size * s.E * s.T;
  int64_t blocks = b.size * s.E * s.L;
  if (blocks > kMaxBlocks) return too_many_blocks("bake", blocks);
  if (n > 0) {
    MS_LAUNCH(fill_kernel, dim3((unsigned)std::min<int64_t>(1024, (n + 255) / 256)), 256, 0,
              stream, baked_out->typed_data(), n, 1.f);
    if (ffi::Error e = launched("bake (filling)"); e.failure()) return e;
  }
  SceneryPtrs p = megastep::bake_ptrs(lines.typed_data(), n_lines.typed_data(), lights.typed_data(),
                                      n_lights.typed_data(), texel_starts.typed_data(),
                                      texel_widths.typed_data());
  if (blocks > 0)
    MS_LAUNCH(bake_kernel, grid_for(blocks), 64, 0, stream, b, s, blocks, p, baked_out->typed_data());
  return launched("bake");
}

// One block per (batch member, env): its threads copy the mask, then mark the texels under
// the env's pixels with atomicOr; a bit a thread turns on counts once, whatever else races.
__global__ void seen_kernel(Batching b, Sizes s, int64_t n_blocks, int n_agent_lines,
                            const int32_t* seen, const int32_t* indices, const float* locations,
                            const int32_t* geometry, const int32_t* starts, const int32_t* widths,
                            int32_t* seen_out, int32_t* new_texels) {
  namespace op = megastep::op;
  int64_t fe = block_index();
  if (fe >= n_blocks) return;
  int64_t e = fe % s.E, flat = fe / s.E, P = s.A * s.R;
  auto at = [&](int which) { return b.block(which, flat) * s.E + e; };
  int32_t* mask = seen_out + fe * s.W;
  const int32_t* src = seen + at(op::seen_seen) * s.W;
  for (int64_t i = threadIdx.x; i < s.W; i += blockDim.x) mask[i] = src[i];
  if (threadIdx.x == 0) new_texels[fe] = 0;
  __syncthreads();
  int g = geometry[at(op::seen_geometry)];
  if (g < 0 || g >= s.G) return;
  const int32_t* st = starts + (b.block(op::seen_texel_starts, flat) * s.G + g) * s.L;
  const int32_t* wd = widths + (b.block(op::seen_texel_widths, flat) * s.G + g) * s.L;
  const int32_t* idx = indices + at(op::seen_indices) * P;
  const float* loc = locations + at(op::seen_locations) * P;
  for (int64_t p = threadIdx.x; p < P; p += blockDim.x) {
    int t = megastep::pixel_texel(idx[p], loc[p], st, wd, (int)s.L, n_agent_lines, 32 * s.W);
    if (t < 0) continue;
    int32_t bit = megastep::seen_bit(t);
    if ((atomicOr(&mask[megastep::seen_word(t)], bit) & bit) == 0) atomicAdd(&new_texels[fe], 1);
  }
}

ffi::Error SeenImpl(cudaStream_t stream MEGASTEP_SEEN_PARAMS) {
  Batching b;
  Sizes s;
  std::string err = megastep::seen_layout({MEGASTEP_SEEN_ARGS(MS_DIMS_OF)}, dims_of(*seen_out),
                                          n_agents, b, s);
  if (!err.empty()) return invalid(err);
  int64_t blocks = b.size * s.E;
  if (blocks > kMaxBlocks) return too_many_blocks("seen", blocks);
  int n_agent_lines = (int)std::min<int64_t>((int64_t)n_agents * megastep::kModelLines, s.L);
  if (blocks > 0)
    MS_LAUNCH(seen_kernel, grid_for(blocks), threads_for(std::max(s.W, s.A * s.R)), 0, stream, b, s,
              blocks, n_agent_lines, seen.typed_data(), indices.typed_data(), locations.typed_data(),
              geometry.typed_data(), texel_starts.typed_data(), texel_widths.typed_data(),
              seen_out->typed_data(), new_texels_out->typed_data());
  return launched("seen");
}

}  // namespace

// The handlers bind cudaStream_t with StreamCtx (XLA's CUDA stream, or null in the emulation)
// and their scratch memory with ScratchCtx (XLA's device allocator, or the host's).
XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepRenderCuda, RenderImpl,
                              megastep_ffi::render_binding<megastep_cuda::StreamCtx>()
                                  .Ctx<megastep_cuda::ScratchCtx>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepPhysicsCuda, PhysicsImpl,
                              megastep_ffi::physics_binding<megastep_cuda::StreamCtx>()
                                  .Ctx<megastep_cuda::ScratchCtx>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepBakeCuda, BakeImpl, megastep_ffi::bake_binding<megastep_cuda::StreamCtx>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepSeenCuda, SeenImpl, megastep_ffi::seen_binding<megastep_cuda::StreamCtx>());

#if !defined(MEGASTEP_CUDA_EMULATION)  // cuda_emulated.cc defines the emulated module
PYBIND11_MODULE(_megastep_cuda, m) {
  m.doc() = "megastep_jax CUDA kernels as XLA FFI handlers";
  m.def("registrations", []() {
    return megastep_ffi::registrations(MegastepRenderCuda, MegastepPhysicsCuda, MegastepBakeCuda, MegastepSeenCuda, "",
                                       MegastepDrawCuda);
  });
}
#endif
