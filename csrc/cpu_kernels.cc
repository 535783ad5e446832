// CPU handlers for the bake, physics and render kernels, registered as XLA FFI targets.
//
// These only check shapes, broadcast leading batch axes and loop over batch members,
// envs, agents, pixels and texels; the maths is in megastep.h, shared with the CUDA file.
// Work is spread over XLA's intra-op thread pool.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "batching.h"
#include "draw_cpu.h"
#include "parallel_for.h"
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

using megastep_cpu::kParallelWork;
using megastep_cpu::parallel_for;

// ---------------------------------------------------------------------------------------
// Render

// One camera's rays and their nearest hits so far, one entry per pixel (structure of arrays
// so the loops over pixels vectorise). The grid traversal works in blocks of kBlock pixels
// (R is padded up with rays that hit nothing) and keeps, per block, the largest distance
// within which a line can still change one of its pixels' results: a 1D hierarchical
// depth buffer, so a line behind what a block already sees costs one comparison.
constexpr int kBlock = 16;

struct Rays {
  std::vector<float> ux, uy, ulen, near_s, s1, t1, s2, reach, block_reach;
  std::vector<int> i1;
  int n_blocks = 0;
  void resize(int64_t R) {
    n_blocks = (int)((R + kBlock - 1) / kBlock);
    for (auto* v : {&ux, &uy, &ulen, &near_s, &s1, &t1, &s2, &reach}) v->resize(n_blocks * kBlock);
    i1.resize(n_blocks * kBlock);
    block_reach.resize(n_blocks);
  }
};

struct Camera {
  Vec p;
  float c, s, tan_half;
  int R;
};

// Per-thread scratch: which lines this camera has met (stamps), and the pixels whose
// nearest hit is a near-tie, cast again in index order.
struct Scratch {
  std::vector<uint32_t> stamps;
  uint32_t stamp = 0;
  std::vector<int> ties;
  std::vector<float> ux, uy, near_s, best_s, best_t;
  std::vector<int> best_i;
  std::vector<int> lo, hi;      // each line's pixel range (line_ranges)
  std::vector<int> visible;     // the lines whose range is not empty
  // The pixel range of every line of env for the camera (megastep::pixel_range), SIMD over
  // lines: pointers to L entries each.
  void line_ranges(const Env& env, const Camera& cam, int*& plo, int*& phi) {
    lo.resize(env.n_lines);
    hi.resize(env.n_lines);
    plo = lo.data();
    phi = hi.data();
    ranges_of(env.agent_lines, 0, env.n_agent_lines, cam, plo, phi);
    ranges_of(env.lines, env.n_agent_lines, env.n_lines, cam, plo, phi);
  }
  static void ranges_of(const float* lines, int j0, int j1, const Camera& cam, int* plo, int* phi) {
    const Camera c = cam;  // a copy: the stores to plo/phi could alias cam.R, reloaded otherwise
#pragma omp simd
    for (int j = j0; j < j1; ++j)
      megastep::pixel_range(megastep::load_line(lines, j), c.p, c.c, c.s, c.tan_half, c.R, plo[j], phi[j]);
  }
  // A fresh stamp for a camera over L lines.
  uint32_t next(int64_t L) {
    if ((int64_t)stamps.size() < L) stamps.assign(L, 0), stamp = 0;
    if (++stamp == 0) std::fill(stamps.begin(), stamps.end(), 0), stamp = 1;
    return stamp;
  }
};

// The line sweep without a grid: every line in index order against the pixels it can reach,
// with cast()'s tie rule (the specification's loop). Whole blocks of kBlock pixels are
// tested (pixels outside a line's range, and the padding, cannot hit it), in GCC vector
// extensions (lowered to whatever the target has): written as a loop over pixels, GCC stores
// under a mask behind a branch, and the next line's loads of a block are not forwarded from
// a masked store.
//
// t's division is deferred: the sweep keeps the winner's tnum and denom, divided once after
// every line (the same bits). Whether t = fl(tnum / denom) is in [0, 1] is decided without
// dividing: with a = |denom| and tn = tnum signed as denom (exact), t <= 1 exactly when
// tn <= a (no float lies in (a, a (1 + 2^-24)], above which the quotient rounds above 1),
// and t >= 0 (-0 included) exactly when tn >= 0 or the quotient rounds to -0,
// |tn| <= 2^-150 a: both when -tn 2^150 <= a, computed by two
// power-of-two scalings, exact except where they overflow: to -inf for tn > 0 (the test is
// true, as it should be) and to +inf for tn < -2^27 (false for every finite a, whose
// 2^-150 a is below 2^-22, and true for a = inf, as it should be).
typedef float FBlock __attribute__((vector_size(4 * kBlock)));
typedef int32_t IBlock __attribute__((vector_size(4 * kBlock)));

inline FBlock load_block(const float* p) { FBlock v; memcpy(&v, p, sizeof v); return v; }
inline IBlock load_block(const int32_t* p) { IBlock v; memcpy(&v, p, sizeof v); return v; }
inline void store_block(float* p, FBlock v) { memcpy(p, &v, sizeof v); }
inline void store_block(int32_t* p, IBlock v) { memcpy(p, &v, sizeof v); }

inline void block_update(const megastep::LineTerms& lt, int j, const float* ux, const float* uy,
                         const float* near_s, float* best_s, int32_t* best_i, float* best_tnum,
                         float* best_denom) {
  FBlock denom, tnum;
  megastep::ray_terms(lt, load_block(ux), load_block(uy), denom, tnum);
  FBlock s = lt.wd / denom;
  const IBlock sign = IBlock{} + (int32_t)0x80000000;
  FBlock a = (FBlock)((IBlock)denom & ~sign), tn = (FBlock)((IBlock)tnum ^ ((IBlock)denom & sign));
  IBlock t_in = (tn <= a) & (tn * -0x1p100f * 0x1p50f <= a);
  FBlock bs = load_block(best_s);
  IBlock hit = (a >= megastep::kParallel) & t_in & (s > load_block(near_s)) &
               (s < bs - megastep::kTieBreak);
  store_block(best_s, hit ? s : bs);
  store_block(best_i, hit ? IBlock{} + j : load_block(best_i));
  store_block(best_tnum, hit ? tnum : load_block(best_tnum));
  store_block(best_denom, hit ? denom : load_block(best_denom));
}

void cast_brute(const Env& env, const Camera& cam, Rays& rays, Scratch& scratch) {
  float* bs = rays.s1.data();
  float* bt = rays.t1.data();  // the winner's tnum until the end, then t
  float* bd = rays.s2.data();  // the winner's denom (s2 is the grid's)
  int* bi = rays.i1.data();
  const float *pux = rays.ux.data(), *puy = rays.uy.data(), *pn = rays.near_s.data();
  int *plo, *phi;
  scratch.line_ranges(env, cam, plo, phi);
  // the lines in view, compacted without a branch (about half the lines are not, in no
  // predictable pattern)
  scratch.visible.resize(env.n_lines);
  int* visible = scratch.visible.data();
  int n_visible = 0;
  for (int j = 0; j < env.n_lines; ++j) {
    visible[n_visible] = j;
    n_visible += plo[j] < phi[j];
  }
  for (int q = 0; q < n_visible; ++q) {
    const int j = visible[q], lo = plo[j], hi = phi[j];
    megastep::LineTerms lt = megastep::line_terms(megastep::env_line(env, j), cam.p);
    for (int r = lo / kBlock * kBlock; r < hi; r += kBlock)
      block_update(lt, j, pux + r, puy + r, pn + r, bs + r, bi + r, bt + r, bd + r);
  }
  for (int r = 0; r < rays.n_blocks * kBlock; r += kBlock) {
    const IBlock i = load_block(bi + r);
    store_block(bt + r, i >= 0 ? load_block(bt + r) / load_block(bd + r) : FBlock{});
  }
}

// Line j against the blocks of pixels it can reach and may still change, order-independently
// (nearest_update). Whole blocks are tested: pixels outside the line's range cannot hit it.
inline void sweep_line(const megastep::Line& line, int j, const Camera& cam, Rays& rays) {
  int lo, hi;
  megastep::pixel_range(line, cam.p, cam.c, cam.s, cam.tan_half, cam.R, lo, hi);
  if (lo >= hi) return;
  // a block whose reach is below the line's distance (with room for rounding) skips it
  float dmin2 = megastep::skip_bound2(line, cam.p);
  megastep::LineTerms lt = megastep::line_terms(line, cam.p);
  float *s1 = rays.s1.data(), *t1 = rays.t1.data(), *s2 = rays.s2.data(), *reach = rays.reach.data();
  int* i1 = rays.i1.data();
  const float *pux = rays.ux.data(), *puy = rays.uy.data(), *pn = rays.near_s.data(), *ul = rays.ulen.data();
  for (int blk = lo / kBlock, last = (hi - 1) / kBlock; blk <= last; ++blk) {
    float br = rays.block_reach[blk];
    if (br * br < dmin2) continue;
    int r0 = blk * kBlock;
#pragma omp simd
    for (int r = r0; r < r0 + kBlock; ++r) {
      megastep::nearest_update(lt, pux[r], puy[r], pn[r], j, s1[r], i1[r], t1[r], s2[r]);
      reach[r] = megastep::reach_of(s1[r], ul[r]);
    }
    float m = 0.f;
#pragma omp simd reduction(max : m)
    for (int r = r0; r < r0 + kBlock; ++r) m = m > reach[r] ? m : reach[r];
    rays.block_reach[blk] = m;
  }
}

// Pixels whose nearest hit is a near-tie (see megastep::resolved) cast again over every line
// in index order, as cast() does.
void recast_ties(const Env& env, const Camera& cam, Rays& rays, Scratch& scratch) {
  auto& ties = scratch.ties;
  ties.clear();
  for (int r = 0; r < cam.R; ++r)
    if (!megastep::resolved(rays.s1[r], rays.i1[r], rays.s2[r])) ties.push_back(r);
  if (ties.empty()) return;
  int n = (int)ties.size();
  for (auto* v : {&scratch.ux, &scratch.uy, &scratch.near_s, &scratch.best_s, &scratch.best_t}) v->resize(n);
  scratch.best_i.resize(n);
  for (int q = 0; q < n; ++q) {
    int r = ties[q];
    scratch.ux[q] = rays.ux[r];
    scratch.uy[q] = rays.uy[r];
    scratch.near_s[q] = rays.near_s[r];
    scratch.best_s[q] = INFINITY;
    scratch.best_t[q] = 0.f;
    scratch.best_i[q] = -1;
  }
  float *bs = scratch.best_s.data(), *bt = scratch.best_t.data();
  int* bi = scratch.best_i.data();
  const float *pux = scratch.ux.data(), *puy = scratch.uy.data(), *pn = scratch.near_s.data();
  for (int j = 0; j < env.n_lines; ++j) {
    megastep::LineTerms lt = megastep::line_terms(megastep::env_line(env, j), cam.p);
#pragma omp simd
    for (int q = 0; q < n; ++q) megastep::ray_update(lt, pux[q], puy[q], pn[q], j, bs[q], bi[q], bt[q]);
  }
  for (int q = 0; q < n; ++q) {
    int r = ties[q];
    rays.s1[r] = bs[q];
    rays.i1[r] = bi[q];
    rays.t1[r] = bt[q];
  }
}

// The camera's nearest hits through the grid: agent lines first, then the grid's cells in
// the camera's view, ring by ring (megastep::grid_rings, as the CUDA sweep), each line once.
// The sweep stops before a ring that no pixel's reach gets to (megastep::ring_bound).
void cast_grid_camera(const Env& env, const megastep::Grid& g, const Camera& cam, Rays& rays,
                      Scratch& scratch) {
  for (int j = 0; j < env.n_agent_lines; ++j) sweep_line(megastep::env_line(env, j), j, cam, rays);
  uint32_t stamp = scratch.next(env.n_lines);
  uint32_t* seen = scratch.stamps.data();
  const megastep::Rings rings = megastep::grid_rings(g, cam.p);
  const megastep::Wedge wedge = megastep::pixels_wedge(cam.p, cam.c, cam.s, cam.tan_half, cam.R, 0, cam.R - 1);
  auto visit = [&](int ix, int iy) {
    if (!megastep::cell_in_wedge(g, ix, iy, wedge)) return;
    int lo, hi;
    megastep::grid_cell(g, ix, iy, lo, hi);
    for (int e = lo; e < hi; ++e) {
      int j = g.lines[e];
      if (!megastep::static_line(env, j) || seen[j] == stamp) continue;
      seen[j] = stamp;
      sweep_line(megastep::load_line(env.lines, j), j, cam, rays);
    }
  };
  for (int k = rings.k0; k <= rings.kmax; ++k) {
    if (k >= 1) {
      float m = 0.f;
      for (int blk = 0; blk < rays.n_blocks; ++blk) m = std::max(m, rays.block_reach[blk]);
      if (m < megastep::ring_bound(k, g.cs)) break;
    }
    // ring k's runs of cells, each in its own loop: with a single call site GCC inlines
    // `visit` and the loop over a cell's lines spills its pointers (3-5% slower)
    const megastep::Ring ring = megastep::grid_ring(g, rings, k);
    const megastep::Ring::Run* run = ring.runs;
    for (int i = 0; i < run[0].n; ++i) visit(run[0].x + i, run[0].y);
    for (int i = 0; i < run[1].n; ++i) visit(run[1].x + i, run[1].y);
    for (int i = 0; i < run[2].n; ++i) visit(run[2].x, run[2].y + i);
    for (int i = 0; i < run[3].n; ++i) visit(run[3].x, run[3].y + i);
  }
  recast_ties(env, cam, rays, scratch);
}

// intensity_at with the shadow test SIMD over 16 lines at a time (the same obstructs()
// per line; a light stops at the first block of lines that blocks it).
float intensity_simd(const Env& env, Vec c) {
  float total = megastep::kAmbient;
  for (int i = 0; i < env.n_lights; ++i) {
    const float* li = env.lights + 3 * i;
    const float lx = li[0], ly = li[1];
    const float* lines = env.lines;
    bool blocked = false;
    for (int j0 = env.n_agent_lines; j0 < env.n_lines && !blocked; j0 += kBlock) {
      int j1 = std::min(j0 + kBlock, env.n_lines), any = 0;
#pragma omp simd reduction(| : any)
      for (int j = j0; j < j1; ++j) any |= (int)megastep::obstructs(lx, ly, c.x, c.y, lines + 4 * j);
      blocked = any != 0;
    }
    if (!blocked) total += megastep::light_term(li, c);
  }
  return megastep::minf(total, 1.f);
}

// For the agents an env's cameras see, per light, the static lines that may shadow some
// point of the agent (built on first need, once per env: they do not depend on the camera).
// intensity_at() over those alone is intensity_at(): a line that crosses a segment
// light -> c for c on the agent's drawn lines crosses it within the box of the light and
// those lines, so its own box meets that box. obstructs()'s rounding moves the crossing it
// finds along the line by at most ~1.2e-3 (box extent + 4 |d|) (its denominator is at least
// 1e-4 |v| |d|; s in (0.001, 0.999) keeps the crossing on the segment): the boxes are padded
// by 2e-2 of their extents, and a NaN keeps a line.
struct AgentShadows {
  std::vector<uint32_t> stamp;          // (A,) the env each agent's lists were built for
  std::vector<std::vector<int>> lines;  // (A,) every light's lines, concatenated
  std::vector<std::vector<int>> start;  // (A,) (n_lights + 1,) offsets into lines
  std::vector<uint8_t> near;            // (L,)
  uint32_t env_stamp = 0;

  void next_env(int A) {
    if ((int)stamp.size() < A) stamp.assign(A, 0), lines.resize(A), start.resize(A), env_stamp = 0;
    if (++env_stamp == 0) std::fill(stamp.begin(), stamp.end(), 0), env_stamp = 1;
  }

  void build(const Env& env, int a) {
    using megastep::maxf;
    using megastep::minf;
    stamp[a] = env_stamp;
    auto& ls = lines[a];
    auto& st = start[a];
    st.assign(1, 0);
    const float* m = env.agent_lines + 4 * megastep::kModelLines * a;
    float x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int k = 0; k < 2 * megastep::kModelLines; ++k) {
      x0 = minf(x0, m[2 * k]), x1 = maxf(x1, m[2 * k]);
      y0 = minf(y0, m[2 * k + 1]), y1 = maxf(y1, m[2 * k + 1]);
    }
    near.resize(env.n_lines);
    uint8_t* nr = near.data();
    ls.resize((size_t)env.n_lights * (env.n_lines - env.n_agent_lines));
    int n = 0;
    for (int i = 0; i < env.n_lights; ++i) {
      const float lx = env.lights[3 * i], ly = env.lights[3 * i + 1];
      const float bx0 = minf(x0, lx), bx1 = maxf(x1, lx), by0 = minf(y0, ly), by1 = maxf(y1, ly);
      const float ext = (bx1 - bx0) + (by1 - by0);
#pragma omp simd
      for (int j = env.n_agent_lines; j < env.n_lines; ++j) {
        const float* l = env.lines + 4 * j;
        float lx0 = minf(l[0], l[2]), lx1 = maxf(l[0], l[2]), ly0 = minf(l[1], l[3]), ly1 = maxf(l[1], l[3]);
        float pad = 2e-2f * (ext + (lx1 - lx0) + (ly1 - ly0)) + 1e-3f;
        nr[j] = !((lx1 < bx0 - pad) | (lx0 > bx1 + pad) | (ly1 < by0 - pad) | (ly0 > by1 + pad));
      }
      for (int j = env.n_agent_lines; j < env.n_lines; ++j) {  // compacted without a branch
        ls[n] = j;
        n += nr[j];
      }
      st.push_back(n);
    }
  }
};

// intensity_at() for a point c on agent `agent`, testing only the lines that may shadow it.
struct AgentLight {
  const Env* env;
  AgentShadows* shadows;
  int agent;
  float operator()(Vec c) const {
    if (shadows->stamp[agent] != shadows->env_stamp) shadows->build(*env, agent);
    const int* ls = shadows->lines[agent].data();
    const int* st = shadows->start[agent].data();
    float total = megastep::kAmbient;
    for (int i = 0; i < env->n_lights; ++i) {
      const float* li = env->lights + 3 * i;
      bool blocked = false;
      for (int k = st[i]; k < st[i + 1] && !blocked; ++k)
        blocked = megastep::obstructs(li[0], li[1], c.x, c.y, env->lines + 4 * ls[k]);
      if (!blocked) total += megastep::light_term(li, c);
    }
    return megastep::minf(total, 1.f);
  }
};

// Each line's direction d = b - a and its length |d|, as env.lines has them (the agents'
// placeholders included), for shade_camera: one table per env, shared by its cameras, built
// where the env has fewer lines than its cameras have pixels (else the pixels read the
// lines, so a scene of many walls seen by few cameras does not pay for all of them).
struct LineShapes {
  std::vector<float> dx, dy, norm;
  bool built = false;
  void build(const Env& env, int64_t n_pixels) {
    const int L = env.n_lines;
    built = L <= n_pixels;
    if (!built) return;
    const int n = std::max(L, 1);  // a miss reads entry 0
    dx.assign(n, 0.f), dy.assign(n, 0.f), norm.assign(n, 0.f);
    const float* l = env.lines;
    float *px = dx.data(), *py = dy.data(), *pn = norm.data();
#pragma omp simd
    for (int j = 0; j < L; ++j) {
      float x = l[4 * j + 2] - l[4 * j], y = l[4 * j + 3] - l[4 * j + 1];
      px[j] = x;
      py[j] = y;
      pn[j] = megastep::line_norm(x, y);
    }
  }
};

// The cosine between pixel rays and line j, from the table or from the line itself (the
// same value: line_norm is the length ray_line_cos takes).
struct ShapeTable {
  const float *dx, *dy, *norm;
  float cos(int j, float ux, float uy, float ulen) const {
    return megastep::ray_line_cos(ux, uy, ulen, dx[j], dy[j], norm[j]);
  }
};
struct ShapeLines {
  const float* lines;
  float cos(int j, float ux, float uy, float ulen) const {
    const float* l = lines + 4 * j;
    return megastep::ray_line_cos(ux, uy, ulen, l[2] - l[0], l[3] - l[1]);
  }
};

// The SIMD pass of shade_camera over every pixel, with Shape giving the lines' cosines.
template <typename Shape>
void shade_pixels(const Env& env, const Shape& shape, const Rays& rays, int R, int32_t* idx_o,
                  float* loc_o, float* dot_o, float* dist_o, float* scr_o) {
  const int T = env.n_texel_capacity;
  const float *baked = env.baked, *tex = env.textures;
  const int32_t *starts = env.texel_starts, *widths = env.texel_widths;
  const float *pux = rays.ux.data(), *puy = rays.uy.data(), *pl = rays.ulen.data();
  const float *ps = rays.s1.data(), *pt = rays.t1.data();
  const int* pi = rays.i1.data();
#pragma omp simd
  for (int r = 0; r < R; ++r) {
    int i = pi[r];
    bool hit = i >= 0;
    int j = hit ? i : 0;
    // One base for every gather (a select between two arrays' loads does not vectorise): a
    // hit on an agent reads its placeholder's shape here and is shaded again later.
    float cosine = shape.cos(j, pux[r], puy[r], pl[r]);
    int w = widths[j], start = starts[j];
    bool textured = hit & (w >= 1) & (start >= 0) & (start <= T - w);
    int wq = textured ? w : 1, sq = textured ? start : 0;
    megastep::Filter f = megastep::texture_filter(pt[r], wq);
    float shading = (1.f - cosine * cosine) * megastep::baked_light(baked, sq, f);
    int tl = 3 * (sq + f.left), tr = 3 * (sq + f.right);  // indices, not pointers: gathers
    float k = textured ? shading : 0.f;
    idx_o[r] = hit ? i : -1;
    loc_o[r] = hit ? pt[r] : 0.f;
    dot_o[r] = hit ? cosine : 0.f;
    dist_o[r] = hit ? ps[r] * pl[r] : INFINITY;
    scr_o[3 * r] = k * (f.wl * tex[tl] + f.wr * tex[tr]);
    scr_o[3 * r + 1] = k * (f.wl * tex[tl + 1] + f.wr * tex[tr + 1]);
    scr_o[3 * r + 2] = k * (f.wl * tex[tl + 2] + f.wr * tex[tr + 2]);
  }
}

// Shades every pixel of one camera from its nearest hits, as shade() does, SIMD over the
// pixels (gathers); hits on agent lines (their own lines, lit per hit) are then shaded one
// by one.
void shade_camera(const Env& env, const LineShapes& shapes, const Rays& rays, int R,
                  int32_t* idx_o, float* loc_o, float* dot_o, float* dist_o, float* scr_o,
                  std::vector<int>& agent_hits, AgentShadows& shadows) {
  const int nA = env.n_agent_lines;
  const float *pux = rays.ux.data(), *puy = rays.uy.data();
  const float *ps = rays.s1.data(), *pt = rays.t1.data();
  const int* pi = rays.i1.data();
  if (env.n_texel_capacity < 1) {  // no texel to read even for untextured lanes: shade one by one
    for (int r = 0; r < R; ++r) {
      megastep::Pixel px = megastep::shade(env, {pux[r], puy[r]}, {pi[r], ps[r], pt[r]});
      idx_o[r] = px.index;
      loc_o[r] = px.location;
      dot_o[r] = px.dot;
      dist_o[r] = px.distance;
      for (int c = 0; c < 3; ++c) scr_o[3 * r + c] = px.rgb[c];
    }
    return;
  }
  if (shapes.built)
    shade_pixels(env, ShapeTable{shapes.dx.data(), shapes.dy.data(), shapes.norm.data()}, rays, R,
                 idx_o, loc_o, dot_o, dist_o, scr_o);
  else
    shade_pixels(env, ShapeLines{env.lines}, rays, R, idx_o, loc_o, dot_o, dist_o, scr_o);
  int n_agent_hits = 0;  // none in most cameras: counted SIMD before a scalar pass
#pragma omp simd reduction(+ : n_agent_hits)
  for (int r = 0; r < R; ++r) n_agent_hits += (pi[r] >= 0) & (pi[r] < nA);
  if (n_agent_hits == 0) return;
  agent_hits.clear();
  for (int r = 0; r < R; ++r)
    if (pi[r] >= 0 && pi[r] < nA) agent_hits.push_back(r);
  for (int r : agent_hits) {
    AgentLight light{&env, &shadows, pi[r] / megastep::kModelLines};
    megastep::Pixel px = megastep::shade_with(env, {pux[r], puy[r]}, {pi[r], ps[r], pt[r]}, light);
    dot_o[r] = px.dot;
    for (int c = 0; c < 3; ++c) scr_o[3 * r + c] = px.rgb[c];
  }
}

ffi::Error RenderImpl(ffi::ThreadPool pool MEGASTEP_RENDER_PARAMS) {
  Batching b;
  megastep::Sizes s;
  std::string err = megastep::render_layout(
      {MEGASTEP_RENDER_ARGS(MS_DIMS_OF)},
      dims_of(*indices_out), b, s);
  if (!err.empty()) return invalid(err);
  if (!megastep::traversal_known(traversal)) return invalid(MEGASTEP_TRAVERSAL_ERROR);
  const int64_t E = s.E, A = s.A, R = s.R, L = s.L;
  megastep::SceneryPtrs ptrs;
  ptrs.lines = lines.typed_data(); ptrs.n_lines = n_lines.typed_data();
  ptrs.lights = lights.typed_data(); ptrs.n_lights = n_lights.typed_data();
  ptrs.textures = textures.typed_data(); ptrs.starts = texel_starts.typed_data();
  ptrs.widths = texel_widths.typed_data(); ptrs.baked = baked.typed_data();
  ptrs.grid_cells = grid_cells.typed_data(); ptrs.grid_lines = grid_lines.typed_data();
  ptrs.grid_origin = grid_origin.typed_data(); ptrs.grid_dims = grid_dims.typed_data();
  int32_t* idx_o = indices_out->typed_data();
  float* loc_o = locations_out->typed_data();
  float* dot_o = dots_out->typed_data();
  float* dist_o = distances_out->typed_data();
  float* scr_o = screen_out->typed_data();
  int n_agent_lines = (int)(A * megastep::kModelLines);

  parallel_for(pool, b.size * E, b.size * E * A * R * std::min<int64_t>(L, 64), [&](int64_t task) {
    int64_t flat = task / E, e = task % E;
    const float* ang = angles.typed_data() + (b.block(megastep::kAngles, flat) * E + e) * A;
    const float* pos = positions.typed_data() + (b.block(megastep::kPositions, flat) * E + e) * A * 2;
    // Per-thread scratch, reused across tasks: drawn agent lines and one camera's rays.
    thread_local std::vector<float> drawn;
    thread_local Rays rays;
    thread_local Scratch scratch;
    thread_local AgentShadows shadows;
    thread_local LineShapes shapes;
    drawn.resize(n_agent_lines * 4);
    rays.resize(R);
    megastep::draw_agents(model.typed_data() + b.block(megastep::kModel, flat) * megastep::kModelLines * 4,
                          pos, ang, (int)A, drawn.data());
    Env env = megastep::env_at(b, flat, e, s, ptrs, n_agent_lines, drawn.data());
    shadows.next_env((int)A);
    shapes.build(env, A * R);
    const int32_t trav = megastep::env_traversal(traversal, env.n_lines, env.n_agent_lines);
    megastep::Grid grid;
    if (megastep::walks_grid(trav)) grid = megastep::grid_at(b, flat, e, s, ptrs);
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
      Camera cam = {{pos[2 * a], pos[2 * a + 1]}, cosf(rd), sinf(rd), tan_half, (int)R};
      {
        float *ux = rays.ux.data(), *uy = rays.uy.data(), *ul = rays.ulen.data(), *nr = rays.near_s.data();
        float *s1 = rays.s1.data(), *s2 = rays.s2.data(), *rc = rays.reach.data(), *t1 = rays.t1.data();
        int* i1 = rays.i1.data();
        int Ri = (int)R;
#pragma omp simd
        for (int r = 0; r < Ri; ++r) {
          // pixel_ray, norm and near_plane in scalars (a Vec keeps GCC from vectorising)
          float x, y;
          megastep::pixel_ray_xy(r, Ri, tan_half, cam.c, cam.s, x, y);
          float len = sqrtf(x * x + y * y);
          ux[r] = x;
          uy[r] = y;
          ul[r] = len;
          nr[r] = rad / len;
          s1[r] = s2[r] = rc[r] = INFINITY;
          t1[r] = 0.f;
          i1[r] = -1;
        }
      }
      // block padding: rays that hit nothing (parallel to every line) and reach nowhere
      for (int64_t r = R; r < (int64_t)rays.n_blocks * kBlock; ++r) {
        rays.ux[r] = rays.uy[r] = rays.reach[r] = 0.f;
        rays.ulen[r] = 1.f;
        rays.near_s[r] = rays.s1[r] = rays.s2[r] = INFINITY;
        rays.t1[r] = 0.f;
        rays.i1[r] = -1;
      }
      for (int blk = 0; blk < rays.n_blocks; ++blk) rays.block_reach[blk] = INFINITY;
      if (!megastep::grid_valid(grid)) {
        cast_brute(env, cam, rays, scratch);
      } else if (trav == megastep::kTraverseRays) {
        for (int64_t r = 0; r < R; ++r) {
          megastep::Hit h = megastep::cast_grid(env, grid, cam.p, {rays.ux[r], rays.uy[r]}, rays.near_s[r]);
          rays.i1[r] = h.index;
          rays.s1[r] = h.s;
          rays.t1[r] = h.t;
        }
      } else {
        cast_grid_camera(env, grid, cam, rays, scratch);
      }
      shade_camera(env, shapes, rays, (int)R, idx_o + base, loc_o + base, dot_o + base, dist_o + base,
                   scr_o + 3 * base, scratch.ties, shadows);
    }
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------
ffi::Error PhysicsImpl(ffi::ThreadPool pool MEGASTEP_PHYSICS_PARAMS) {
  Batching b;
  megastep::Sizes s;
  std::string err = megastep::physics_layout(
      {MEGASTEP_PHYSICS_ARGS(MS_DIMS_OF)},
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
ffi::Error BakeImpl(ffi::ThreadPool pool MEGASTEP_BAKE_PARAMS) {
  Batching b;
  megastep::Sizes s;
  std::string err = megastep::bake_layout(
      {MEGASTEP_BAKE_ARGS(MS_DIMS_OF)},
      dims_of(*baked_out), n_agents, b, s);
  if (!err.empty()) return invalid(err);
  const int64_t E = s.E, L = s.L, T = s.T;
  megastep::SceneryPtrs ptrs = megastep::bake_ptrs(lines.typed_data(), n_lines.typed_data(),
                                                   lights.typed_data(), n_lights.typed_data(),
                                                   texel_starts.typed_data(), texel_widths.typed_data());
  int n_agent_lines = n_agents * megastep::kModelLines;
  float* out = baked_out->typed_data();
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
    megastep::Line line = megastep::load_line(env.lines, (int)j);
    for (int k = 0; k < w; ++k) dst[k] = intensity_simd(env, megastep::texel_centre(line, k, w));
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------
// One task per (batch member, env): copy its mask, then mark the texels under its pixels.
ffi::Error SeenImpl(ffi::ThreadPool pool MEGASTEP_SEEN_PARAMS) {
  Batching b;
  megastep::Sizes s;
  std::string err = megastep::seen_layout({MEGASTEP_SEEN_ARGS(MS_DIMS_OF)}, dims_of(*seen_out),
                                          n_agents, b, s);
  if (!err.empty()) return invalid(err);
  const int64_t E = s.E, W = s.W, P = s.A * s.R, L = s.L;
  const int n_agent_lines = (int)std::min<int64_t>((int64_t)n_agents * megastep::kModelLines, L);
  parallel_for(pool, b.size * E, b.size * E * (W + 4 * P), [&](int64_t task) {
    namespace op = megastep::op;
    int64_t flat = task / E, e = task % E;
    auto at = [&](int which) { return b.block(which, flat) * E + e; };
    int32_t* mask = seen_out->typed_data() + task * W;
    const int32_t* src = seen.typed_data() + at(op::seen_seen) * W;
    std::copy(src, src + W, mask);
    int32_t fresh = 0;
    int g = geometry.typed_data()[at(op::seen_geometry)];
    if (g >= 0 && g < s.G) {
      int64_t row = b.block(op::seen_texel_starts, flat) * s.G + g;
      int64_t wrow = b.block(op::seen_texel_widths, flat) * s.G + g;
      const int32_t* starts = texel_starts.typed_data() + row * L;
      const int32_t* widths = texel_widths.typed_data() + wrow * L;
      const int32_t* idx = indices.typed_data() + at(op::seen_indices) * P;
      const float* loc = locations.typed_data() + at(op::seen_locations) * P;
      thread_local std::vector<int> texels;
      texels.resize(P);
      int* tx = texels.data();
#pragma omp simd
      for (int64_t p = 0; p < P; ++p)
        tx[p] = megastep::pixel_texel(idx[p], loc[p], starts, widths, (int)L, n_agent_lines, 32 * W);
      // Neighbouring pixels show neighbouring texels: keep the current word in a register
      // rather than reloading the word just stored (a store-to-load chain per pixel).
      int current = -1;
      int32_t word = 0;
      for (int64_t p = 0; p < P; ++p) {
        int t = tx[p];
        if (t < 0) continue;
        int w = megastep::seen_word(t);
        if (w != current) {
          if (current >= 0) mask[current] = word;
          current = w;
          word = mask[w];
        }
        int32_t bit = megastep::seen_bit(t);
        fresh += (word & bit) == 0;
        word |= bit;
      }
      if (current >= 0) mask[current] = word;
    }
    new_texels_out->typed_data()[task] = fresh;
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepRenderCpu, RenderImpl, megastep_ffi::render_binding<ffi::ThreadPool>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepPhysicsCpu, PhysicsImpl, megastep_ffi::physics_binding<ffi::ThreadPool>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepBakeCpu, BakeImpl, megastep_ffi::bake_binding<ffi::ThreadPool>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(MegastepSeenCpu, SeenImpl, megastep_ffi::seen_binding<ffi::ThreadPool>());

PYBIND11_MODULE(_megastep_cpu, m) {
  m.doc() = "megastep_jax CPU kernels as XLA FFI handlers";
  m.def("registrations", []() {
    return megastep_ffi::registrations(MegastepRenderCpu, MegastepPhysicsCpu, MegastepBakeCpu, MegastepSeenCpu, "",
                                       MegastepDrawCpu);
  });
  m.def("interface", &megastep_ffi::interface,
        "The kernels' operands, attributes and results in call order, and the shared constants");
}
