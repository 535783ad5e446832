// The maths of megastep's kernels (bake, physics, render) and of the seen-texel mask, written once.
//
// Everything here is an inline function that compiles both as C++ and as CUDA device
// code. cpu_kernels.cc and cuda_kernels.cu only loop or launch over batch members, envs,
// agents, pixels and texels, and call these functions, so the CPU tests exercise exactly
// the code that runs on a GPU. ../megastep_jax/reference.py is the same maths in jax.numpy
// and the specification the tests compare against; ../../shared/SPEC.md gives the
// behaviour in prose.
//
// Bounds: every function that indexes an env's arrays takes the padded sizes too and
// never reads outside them, whatever the counts, texel offsets or geometry say.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MS_FN __host__ __device__ inline
#else
#define MS_FN inline
#endif

namespace megastep {

constexpr float kAmbient = 0.1f;
constexpr float kLuminance = 2.0f;
constexpr float kShadowReach = 0.999f;  // keeps a wall from shadowing its own texels
constexpr float kShadowParallel = 1e-4f;  // |sin| between a light's ray and a line below which it cannot shadow
constexpr float kParallel = 1e-3f;      // |u x (B-A)| below this: ray parallel to line
constexpr float kTieBreak = 1e-4f;      // nearer of two coincident lines wins only by this
constexpr float kDotEps = 1e-6f;
constexpr float kFilterEps = 1e-3f;
constexpr float kContactScale = 1.001f;  // discs collide slightly before they touch
constexpr float kBackoff = 0.99f;        // stop a little short of the contact
// Under slide and bounce a contact counts only where the motion heads into it by more than
// this fraction of its length: after a slide the motion runs along the wall, and the sign
// of what rounding leaves of its normal component must not decide whether it is stopped.
constexpr float kApproach = 1e-5f;
constexpr int kModelLines = 8;
constexpr float kPi = 3.14159265358979323846f;

enum Collision : int32_t { kStop = 0, kSlide = 1, kBounce = 2 };

struct Vec {
  float x, y;
};
MS_FN Vec operator+(Vec a, Vec b) { return {a.x + b.x, a.y + b.y}; }
MS_FN Vec operator-(Vec a, Vec b) { return {a.x - b.x, a.y - b.y}; }
MS_FN Vec operator*(float k, Vec a) { return {k * a.x, k * a.y}; }
MS_FN float dot(Vec a, Vec b) { return a.x * b.x + a.y * b.y; }
MS_FN float cross(Vec a, Vec b) { return a.x * b.y - a.y * b.x; }
MS_FN float norm(Vec a) { return sqrtf(dot(a, a)); }

struct Line {
  Vec a, b;
};
MS_FN Line load_line(const float* lines, int j) {
  const float* p = lines + 4 * j;
  return {{p[0], p[1]}, {p[2], p[3]}};
}
MS_FN void store_line(float* lines, int j, Line l) {
  float* p = lines + 4 * j;
  p[0] = l.a.x; p[1] = l.a.y; p[2] = l.b.x; p[3] = l.b.y;
}
MS_FN int clampi(int x, int lo, int hi) { return x < lo ? lo : (x > hi ? hi : x); }
MS_FN int maxi(int a, int b) { return a > b ? a : b; }
MS_FN int mini(int a, int b) { return a < b ? a : b; }
MS_FN int absi(int x) { return x < 0 ? -x : x; }
// fminf and fmaxf (a NaN operand yields the other), as selects: with -O3 but without
// -ffinite-math-only the libm calls are not inlined, and they keep loops from vectorising.
// Only the sign of a zero result may differ from libm's.
MS_FN float minf(float a, float b) {
  float m = a < b ? a : b;
  return b != b ? a : m;
}
MS_FN float maxf(float a, float b) {
  float m = a > b ? a : b;
  return b != b ? a : m;
}

// ---------------------------------------------------------------------------------------
// One env's data, as pointers into the padded batch arrays (see megastep_jax/state.py).
struct Env {
  const float* lines;         // (L, 2, 2); the first n_agent_lines are replaced by drawn
  const float* agent_lines;   // (n_agent_lines, 2, 2), the agents' models as drawn this step
  int n_lines;                // real lines, clamped to [n_agent_lines, L]
  int n_agent_lines;          // n_agents * 8
  const float* lights;        // (NL, 3)
  int n_lights;               // clamped to [0, NL]
  const float* textures;      // (T, 3)
  const int32_t* texel_starts;  // (L,)
  const int32_t* texel_widths;  // (L,)
  const float* baked;         // (T,)
  int n_texel_capacity;       // T
};

MS_FN Line env_line(const Env& env, int j) {
  return j < env.n_agent_lines ? load_line(env.agent_lines, j) : load_line(env.lines, j);
}

// Agent model line k placed at the agent's pose; c, s are cos and sin of its angle.
MS_FN Line draw_model_line(const float* model, int k, Vec pos, float c, float s) {
  Line m = load_line(model, k);
  Vec a = {c * m.a.x - s * m.a.y + pos.x, s * m.a.x + c * m.a.y + pos.y};
  Vec b = {c * m.b.x - s * m.b.y + pos.x, s * m.b.x + c * m.b.y + pos.y};
  return {a, b};
}

// Draws every agent's model into out (n_agents*8 lines).
MS_FN void draw_agents(const float* model, const float* positions, const float* angles,
                       int n_agents, float* out) {
  for (int a = 0; a < n_agents; ++a) {
    float rad = angles[a] * (kPi / 180.0f);
    float c = cosf(rad), s = sinf(rad);
    Vec pos = {positions[2 * a], positions[2 * a + 1]};
    for (int k = 0; k < kModelLines; ++k)
      store_line(out, a * kModelLines + k, draw_model_line(model, k, pos, c, s));
  }
}

// ---------------------------------------------------------------------------------------
// Lighting

// Whether the segment light -> c crosses line l (0 < t < 1, 1 - kShadowReach < s <
// kShadowReach: a line through the light, like one through c, casts no shadow on c).
// A line (nearly) parallel to the light's ray does not obstruct it: exactly parallel
// lines give inf/NaN fractions, for which the comparisons are false, and nearly parallel
// ones (a light on a wall's own line) fractions that are rounding noise.
// In scalars (line = its 4 floats), so that a SIMD loop over lines vectorises (GCC 12 does
// not through the Vec struct); the Vec form below is the same arithmetic.
MS_FN bool obstructs(float lx, float ly, float cx, float cy, const float* line) {
  float dx = line[2] - line[0], dy = line[3] - line[1], vx = cx - lx, vy = cy - ly;
  float wx = line[0] - lx, wy = line[1] - ly;
  float denom = vx * dy - vy * dx;
  float s = (wx * dy - wy * dx) / denom;
  float t = (wx * vy - wy * vx) / denom;
  return (fabsf(denom) > kShadowParallel * (sqrtf(vx * vx + vy * vy) * sqrtf(dx * dx + dy * dy))) &&
         (t > 0.f) && (t < 1.f) && (s > 1.f - kShadowReach) && (s < kShadowReach);
}
MS_FN bool obstructs(Vec light, Vec c, Line l) {
  float line[4] = {l.a.x, l.a.y, l.b.x, l.b.y};
  return obstructs(light.x, light.y, c.x, c.y, line);
}

// What light i (x, y, strength) adds at c when nothing blocks it.
MS_FN float light_term(const float* li, Vec c) {
  Vec r = Vec{li[0], li[1]} - c;
  return kLuminance * li[2] / maxf(dot(r, r), 1.f);
}

// Intensity at point c: ambient plus every light not blocked by a static line.
MS_FN float intensity_at(const Env& env, Vec c) {
  float total = kAmbient;
  for (int i = 0; i < env.n_lights; ++i) {
    const float* li = env.lights + 3 * i;
    bool blocked = false;
    for (int j = env.n_agent_lines; j < env.n_lines && !blocked; ++j)
      blocked = obstructs(li[0], li[1], c.x, c.y, env.lines + 4 * j);
    if (!blocked) total += light_term(li, c);
  }
  return minf(total, 1.f);
}

// The point texel k (0-based) of line l with w texels is lit at: its centre.
MS_FN Vec texel_centre(Line l, int k, int w) {
  float f = (k + 0.5f) / (float)w;
  return l.a + f * (l.b - l.a);
}

// Baked intensity of texel k (0-based) of static line j with w texels.
MS_FN float bake_texel(const Env& env, int j, int k, int w) {
  return intensity_at(env, texel_centre(load_line(env.lines, j), k, w));
}

// ---------------------------------------------------------------------------------------
// Render

// Ray direction of pixel r of R in the agent frame, before rotation: (1, v).
MS_FN float pixel_slope(int r, int R, float tan_half_fov) {
  return (float)(R - 2 * r - 1) / (float)R * tan_half_fov;
}

struct Hit {
  int index;      // line index, -1 for none
  float s;        // ray parameter
  float t;        // fraction along the line
};

// The per-line terms of the ray-line solve p + s*u = a + t*(b - a) that do not depend on
// the ray, so a camera computes them once per line for all its pixels.
struct LineTerms {
  Vec d;     // b - a
  Vec w;     // a - p
  float wd;  // cross(w, d)
};
MS_FN LineTerms line_terms(Line l, Vec p) {
  Vec d = l.b - l.a, w = l.a - p;
  return {d, w, cross(w, d)};
}

// Considers line j for the ray (ux, uy): it replaces the best hit when the ray is not
// parallel to it, hits it within its ends, beyond the near plane, and nearer by kTieBreak.
// Branch-free so the CPU loop over pixels vectorises.
// The ray-line solve, written once so every traversal computes bit-identical s and t.
// The solve's denominator and t's numerator (s = lt.wd / denom, t = tnum / denom); the CPU
// line sweep uses them to decide t without dividing (cpu_kernels.cc).
// A template so the CPU sweep's vectors (GCC vector extensions) share the expression, and
// with it the compiler's choice of fused multiply-adds.
template <typename F>
MS_FN void ray_terms(const LineTerms& lt, F ux, F uy, F& denom, F& tnum) {
  denom = ux * lt.d.y - uy * lt.d.x;
  tnum = lt.w.x * uy - lt.w.y * ux;
}
MS_FN bool ray_hits(const LineTerms& lt, float ux, float uy, float near_s, float& s, float& t) {
  float denom, tnum;
  ray_terms(lt, ux, uy, denom, tnum);
  s = lt.wd / denom;
  t = tnum / denom;
  return (fabsf(denom) >= kParallel) & (t >= 0.f) & (t <= 1.f) & (s > near_s);
}

MS_FN void ray_update(const LineTerms& lt, float ux, float uy, float near_s, int j,
                      float& best_s, int& best_i, float& best_t) {
  float s, t;
  bool crosses = ray_hits(lt, ux, uy, near_s, s, t);  // sets s first: & does not order its operands
  bool hit = crosses & (s < best_s - kTieBreak);
  best_s = hit ? s : best_s;
  best_i = hit ? j : best_i;
  best_t = hit ? t : best_t;
}

// The pixels [lo, hi) whose rays can hit line l, for a camera at p facing (c, s): a
// culling step for loops that test one line against many pixels. It is conservative
// (pixels outside the range have t outside [0, 1] by far more than rounding), so culled
// and brute-force casts agree exactly. A line behind the camera gets an empty range (a
// hit has local x = s > 0); one reaching near the camera plane gets every pixel.
constexpr float kFrontEps = 1e-3f;
MS_FN void pixel_range(Line l, Vec p, float c, float s, float tan_half_fov, int R, int& lo,
                       int& hi) {
  // in scalars and selects, no early return: the CPU kernel runs it SIMD over lines
  float dax = l.a.x - p.x, day = l.a.y - p.y, dbx = l.b.x - p.x, dby = l.b.y - p.y;
  float ax = dax * c + day * s, ay = day * c - dax * s;
  float bx = dbx * c + dby * s, by = dby * c - dbx * s;
  bool behind = (ax < -kFrontEps) & (bx < -kFrontEps);
  bool ahead = (ax > kFrontEps) & (bx > kFrontEps);
  // (only used ahead, where ax, bx > 0; elsewhere clamped to a finite range and discarded)
  float va = ay / ax, vb = by / bx;
  // pixel r's slope is (R - 2r - 1)/R * tan_half_fov, decreasing in r
  float k = (float)R / tan_half_fov;
  float rlo = ((float)(R - 1) - maxf(va, vb) * k) * 0.5f;
  float rhi = ((float)(R - 1) - minf(va, vb) * k) * 0.5f;
  rlo = minf(maxf(rlo - 2.f, 0.f), (float)R);
  rhi = minf(maxf(rhi + 3.f, 0.f), (float)R);
  int l0 = ahead ? (int)rlo : 0, h0 = ahead ? (int)rhi : R;
  bool empty = behind | !(l0 < h0);
  lo = empty ? 0 : l0;
  hi = empty ? 0 : h0;
}

// Casts the ray p + s*u against every real line of the env, in index order.
MS_FN Hit cast(const Env& env, Vec p, Vec u, float near_s) {
  Hit best = {-1, INFINITY, 0.f};
  for (int j = 0; j < env.n_lines; ++j)
    ray_update(line_terms(env_line(env, j), p), u.x, u.y, near_s, j, best.s, best.index, best.t);
  return best;
}

// ---------------------------------------------------------------------------------------
// Acceleration grid over an env's static lines (built by megastep_jax/scene.py build_grid)
//
// A uniform grid of nx * ny square cells of side cs from (x0, y0); cell c = iy * nx + ix
// lists, in lines[cells[c] : cells[c + 1]], every static line that comes within
// kGridPad * cs of the cell (so a hit point computed with rounding is still listed in the
// cell a traversal finds it in). nx == 0 means no grid: every static line is cast.
//
// Exactness. `cast` keeps the first line, in index order, whose hit is nearer than the best
// so far by kTieBreak; a traversal meets lines in another order. So traversals track the
// nearest hit (s1, i1, t1) and the nearest hit of any other line (s2), order-independently,
// until no unvisited line can hit nearer than s1 + tie_gap(s1). Where s2 > s1 + tie_gap(s1)
// the index-order cast provably keeps i1 with the same s and t (any line before it is
// farther by more than kTieBreak, any after it is not nearer); otherwise (coincident lines,
// rays through a corner) the pixel is cast again in index order over every line.
constexpr float kGridPad = 1e-3f;

// How the render kernels find each ray's nearest line (the `traversal` attribute).
enum Traversal : int32_t {
  kTraverseGrid = 0,   // the grid where the env has one, swept per camera (CPU) or per span
                       // of a camera's pixels (CUDA block): the camera sweep below
  kTraverseBrute = 1,  // every line, in index order (the specification's loop)
  kTraverseRays = 2,   // the grid, one ray at a time (cast_grid, a 2D DDA)
  kTraverseAuto = 3,   // the grid, except in an env with fewer than kGridMinLines static lines
};

// Below this many static lines casting every line beats walking the grid on the CPU (the
// line sweep is SIMD over pixels and lines, the grid's is not): procedural and Cubicasa
// floorplans of 100-200 walls 1.5x faster; mazes even at ~200 walls, the grid 1.1x faster
// at 290 and 1.35x at 450; open halls of random walls even near 800 (benchmarks/kernels.py).
// All traversals give the same result, so this only moves time.
constexpr int kGridMinLines = 256;

// Whether a traversal value is one of the above, and what the kernels say when it is not.
MS_FN bool traversal_known(int32_t traversal) {
  return traversal >= kTraverseGrid && traversal <= kTraverseAuto;
}
#define MEGASTEP_TRAVERSAL_ERROR \
  "traversal: expected 0 (grid), 1 (brute force), 2 (grid, per ray) or 3 (auto)"

// Whether a resolved traversal walks the grid (else every line is cast).
MS_FN bool walks_grid(int32_t traversal) {
  return traversal == kTraverseGrid || traversal == kTraverseRays;
}

// The traversal an env gets: `auto` resolved by its static line count.
MS_FN int32_t env_traversal(int32_t traversal, int n_lines, int n_agent_lines) {
  if (traversal != kTraverseAuto) return traversal;
  return n_lines - n_agent_lines < kGridMinLines ? kTraverseBrute : kTraverseGrid;
}

struct Grid {
  const int32_t* cells = nullptr;  // (C + 1,) offsets into lines
  const int32_t* lines = nullptr;  // (K,) line indices
  float x0 = 0.f, y0 = 0.f, cs = 0.f;
  int nx = 0, ny = 0;
  int n_cells = 0;                 // C, the padded capacity
  int n_entries = 0;               // K
};

// Whether g can be traversed: positive dims within the padded arrays, finite geometry.
MS_FN bool grid_valid(const Grid& g) {
  return g.cells != nullptr && g.lines != nullptr && g.nx > 0 && g.ny > 0 &&
         (int64_t)g.nx * (int64_t)g.ny <= (int64_t)g.n_cells && g.cs > 0.f &&
         g.cs < INFINITY && fabsf(g.x0) < INFINITY && fabsf(g.y0) < INFINITY;
}

// The entries [lo, hi) of cell (ix, iy), clamped into the padded arrays.
MS_FN void grid_cell(const Grid& g, int ix, int iy, int& lo, int& hi) {
  int c = iy * g.nx + ix;
  lo = clampi(g.cells[c], 0, g.n_entries);
  hi = clampi(g.cells[c + 1], lo, g.n_entries);
}

// Cell coordinate of x along an axis starting at o, clamped to [-2^24, 2^24] (points far
// outside the grid stay representable).
MS_FN int grid_coord(float x, float o, float cs) {
  float c = floorf((x - o) / cs);
  c = c != c ? 0.f : (c < -16777216.f ? -16777216.f : (c > 16777216.f ? 16777216.f : c));
  return (int)c;
}

// How much nearer than s1 another hit must be ruled out for i1 to be the index-order answer.
MS_FN float tie_gap(float s1) { return 2.f * kTieBreak + 1e-5f * s1; }

// Whether a traversal's result is the index-order cast's: no hit, or the nearest hit is
// separated from the next-nearest line by more than tie_gap.
MS_FN bool resolved(float s1, int i1, float s2) { return i1 < 0 || s2 > s1 + tie_gap(s1); }

// Order-independent twin of ray_update: keeps the nearest hit (s1, i1, t1) and the nearest
// hit distance s2 of any other line. A line met twice (it spans several cells) is harmless.
MS_FN void nearest_update(const LineTerms& lt, float ux, float uy, float near_s, int j,
                          float& s1, int& i1, float& t1, float& s2) {
  float s, t;
  bool hit = ray_hits(lt, ux, uy, near_s, s, t) & (j != i1);
  bool nearer = hit & (s < s1);
  bool second = hit & (s < s2);
  float n2 = second ? s : s2;
  s2 = nearer ? s1 : n2;
  s1 = nearer ? s : s1;
  i1 = nearer ? j : i1;
  t1 = nearer ? t : t1;
}

// Whether line j of env is a static line a grid entry may name.
MS_FN bool static_line(const Env& env, int j) { return j >= env.n_agent_lines && j < env.n_lines; }

// ---------------------------------------------------------------------------------------
// The camera sweep: a whole camera's (or a span of its pixels') rays through the grid at
// once, cell by cell in rings of growing Chebyshev distance around the camera's cell, every
// line of a ring against every ray (nearest_update, order-independent). The CPU sweeps each
// camera with SIMD over pixels (cpu_kernels.cc), the CUDA kernel each span of a block's
// pixels with a thread per pixel (cuda_kernels.cu); both walk the rings below.

// Squared distance from p to segment l: a lower bound on the squared distance of any hit.
MS_FN float segment_distance2(Line l, Vec p) {
  Vec d = l.b - l.a, w = p - l.a;
  float dd = dot(d, d);
  float t = dd > 0.f ? dot(w, d) / dd : 0.f;
  t = t < 0.f ? 0.f : (t > 1.f ? 1.f : t);
  Vec q = l.a + t * d - p;
  return dot(q, q);
}

// The squared segment distance below which a line may still change a ray whose reach
// (reach_of) is r: skipping it when r * r < this bound cannot change the ray's result (the
// hit is no nearer than the segment; the factor covers rounding).
MS_FN float skip_bound2(Line l, Vec p) { return segment_distance2(l, p) * (1.f - 1e-4f); }

// Distance in metres beyond which no line can change a ray's result (see resolved): its
// nearest hit s1 plus tie_gap, times the ray's length; +inf before the first hit.
MS_FN float reach_of(float s1, float ulen) { return (s1 + tie_gap(s1)) * ulen; }

// The wedge of rays from p between slopes vlo <= vhi in the frame of a camera facing (c, s)
// (the ray of slope v is (1, v) there; a camera's pixels have slopes pixel_slope(r)).
struct Wedge {
  Vec p;
  float c, s, vlo, vhi, sec_lo, sec_hi;  // sec_* = sqrt(1 + v^2)
};
MS_FN Wedge make_wedge(Vec p, float c, float s, float vlo, float vhi) {
  return {p, c, s, vlo, vhi, sqrtf(1.f + vlo * vlo), sqrtf(1.f + vhi * vhi)};
}
// The wedge of pixels [r0, r1] of R, widened so the rotated rays (rounded) stay inside.
MS_FN Wedge pixels_wedge(Vec p, float c, float s, float tan_half_fov, int R, int r0, int r1) {
  float vhi = pixel_slope(r0, R, tan_half_fov), vlo = pixel_slope(r1, R, tan_half_fov);
  return make_wedge(p, c, s, vlo - 1e-5f * (1.f + fabsf(vlo)), vhi + 1e-5f * (1.f + fabsf(vhi)));
}

// Whether grid cell (ix, iy) can hold a point some ray of the wedge reaches: its bounding
// disc (radius widened by 1% and 1e-4) is ahead of the apex and meets both of the wedge's
// half-planes. Conservative.
MS_FN bool cell_in_wedge(const Grid& g, int ix, int iy, const Wedge& w) {
  float hx = g.x0 + ((float)ix + 0.5f) * g.cs - w.p.x, hy = g.y0 + ((float)iy + 0.5f) * g.cs - w.p.y;
  float fx = hx * w.c + hy * w.s, fy = hy * w.c - hx * w.s;
  float rr = 0.7072f * g.cs * 1.01f + 1e-4f;
  return fx > -rr && fy - w.vhi * fx <= rr * w.sec_hi && w.vlo * fx - fy <= rr * w.sec_lo;
}

// The rings a sweep from p walks: k0 (the first that meets the grid) to kmax (the last),
// around the camera's cell (cx, cy), which may lie outside the grid.
struct Rings {
  int cx, cy, k0, kmax;
};
MS_FN Rings grid_rings(const Grid& g, Vec p) {
  Rings r;
  r.cx = grid_coord(p.x, g.x0, g.cs);
  r.cy = grid_coord(p.y, g.y0, g.cs);
  // how many cells coordinate c lies outside [0, n - 1], and how far its farthest cell is
  auto outside = [](int c, int n) { return c < 0 ? -c : (c >= n ? c - (n - 1) : 0); };
  auto farthest = [](int c, int n) { return maxi(absi(c), absi(c - (n - 1))); };
  r.k0 = maxi(outside(r.cx, g.nx), outside(r.cy, g.ny));
  r.kmax = maxi(farthest(r.cx, g.nx), farthest(r.cy, g.ny));
  return r;
}

// Ring k's cells inside the grid, as up to four runs: row cy - k, row cy + k (k > 0), then
// columns cx - k and cx + k (k > 0) between those rows. n cells in all; ring_cell numbers them.
struct Ring {
  struct Run {
    int x, y, dx, dy, n;  // cells (x + i dx, y + i dy) for i < n
  } runs[4];
  int n;
};
MS_FN Ring grid_ring(const Grid& g, const Rings& rs, int k) {
  int xlo = maxi(rs.cx - k, 0), xhi = mini(rs.cx + k, g.nx - 1);
  int ylo = maxi(rs.cy - k + 1, 0), yhi = mini(rs.cy + k - 1, g.ny - 1);
  int row = maxi(xhi - xlo + 1, 0), col = maxi(yhi - ylo + 1, 0);
  int top = rs.cy - k, bottom = rs.cy + k, left = rs.cx - k, right = rs.cx + k;
  Ring r;
  r.runs[0] = {xlo, top, 1, 0, top >= 0 && top < g.ny ? row : 0};
  r.runs[1] = {xlo, bottom, 1, 0, k > 0 && bottom >= 0 && bottom < g.ny ? row : 0};
  r.runs[2] = {left, ylo, 0, 1, left >= 0 && left < g.nx ? col : 0};
  r.runs[3] = {right, ylo, 0, 1, k > 0 && right >= 0 && right < g.nx ? col : 0};
  r.n = r.runs[0].n + r.runs[1].n + r.runs[2].n + r.runs[3].n;
  return r;
}
// The q-th cell of ring r (0 <= q < r.n).
MS_FN void ring_cell(const Ring& r, int q, int& ix, int& iy) {
  int i = 0;
  while (i < 3 && q >= r.runs[i].n) q -= r.runs[i++].n;
  ix = r.runs[i].x + q * r.runs[i].dx;
  iy = r.runs[i].y + q * r.runs[i].dy;
}

// Ring k >= 1 holds no point nearer the camera than k - 1 cells (less the grid's padding and
// rounding): a sweep whose rays all have a smaller reach can stop before it.
MS_FN float ring_bound(int k, float cs) {
  return ((float)(k - 1) * cs - 2.f * kGridPad * cs) * (1.f - 1e-5f) - 1e-5f;
}

// Casts one ray through the grid front to back (a 2D DDA), stopping once no unvisited
// cell can hold a line nearer than s1 + tie_gap(s1); agent lines are tested brute force.
// Equal to cast() exactly (see above). Used per pixel by the CUDA kernel.
MS_FN Hit cast_grid(const Env& env, const Grid& g, Vec p, Vec u, float near_s) {
  float s1 = INFINITY, t1 = 0.f, s2 = INFINITY;
  int i1 = -1;
  for (int j = 0; j < env.n_agent_lines; ++j)
    nearest_update(line_terms(env_line(env, j), p), u.x, u.y, near_s, j, s1, i1, t1, s2);
  if (!grid_valid(g)) {
    for (int j = env.n_agent_lines; j < env.n_lines; ++j)
      nearest_update(line_terms(load_line(env.lines, j), p), u.x, u.y, near_s, j, s1, i1, t1, s2);
  } else {
    // the ray's parameter interval inside the grid's box
    float bx[2] = {g.x0, g.x0 + (float)g.nx * g.cs}, by[2] = {g.y0, g.y0 + (float)g.ny * g.cs};
    float tlo = 0.f, thi = INFINITY;
    if (u.x != 0.f) {
      float ta = (bx[0] - p.x) / u.x, tb = (bx[1] - p.x) / u.x;
      tlo = maxf(tlo, minf(ta, tb));
      thi = minf(thi, maxf(ta, tb));
    } else if (p.x < bx[0] || p.x > bx[1]) {
      thi = -1.f;
    }
    if (u.y != 0.f) {
      float ta = (by[0] - p.y) / u.y, tb = (by[1] - p.y) / u.y;
      tlo = maxf(tlo, minf(ta, tb));
      thi = minf(thi, maxf(ta, tb));
    } else if (p.y < by[0] || p.y > by[1]) {
      thi = -1.f;
    }
    if (tlo <= thi) {
      Vec q = p + tlo * u;
      int ix = clampi(grid_coord(q.x, g.x0, g.cs), 0, g.nx - 1);
      int iy = clampi(grid_coord(q.y, g.y0, g.cs), 0, g.ny - 1);
      int sx = u.x > 0.f ? 1 : (u.x < 0.f ? -1 : 0), sy = u.y > 0.f ? 1 : (u.y < 0.f ? -1 : 0);
      // every step moves one cell along x or y, so nx + ny steps leave the grid
      for (int n = 0; n < g.nx + g.ny; ++n) {
        int lo, hi;
        grid_cell(g, ix, iy, lo, hi);
        for (int k = lo; k < hi; ++k) {
          int j = g.lines[k];
          if (static_line(env, j))
            nearest_update(line_terms(load_line(env.lines, j), p), u.x, u.y, near_s, j, s1, i1, t1, s2);
        }
        // exit parameters through the cell's far x and y sides, from the cell index (no drift)
        float tx = sx == 0 ? INFINITY : (g.x0 + (float)(ix + (sx > 0)) * g.cs - p.x) / u.x;
        float ty = sy == 0 ? INFINITY : (g.y0 + (float)(iy + (sy > 0)) * g.cs - p.y) / u.y;
        float texit = minf(tx, ty);
        if (i1 >= 0 && s1 + tie_gap(s1) < texit * (1.f - 1e-5f) - 1e-5f) break;
        if (!(texit < thi)) break;
        if (tx < ty) {
          ix += sx;
          if (ix < 0 || ix >= g.nx) break;
        } else {
          iy += sy;
          if (iy < 0 || iy >= g.ny) break;
        }
      }
    }
  }
  if (!resolved(s1, i1, s2)) return cast(env, p, u, near_s);
  return {i1, s1, t1};
}

// megastep's two-texel filter at fraction t of a line with w >= 1 texels.
struct Filter {
  int left, right;
  float wl, wr;
};
MS_FN Filter texture_filter(float t, int w) {
  float y = minf(t * (float)(w + 1), (float)(w - 1));
  int left = (int)maxf(y - 1.f, 0.f);
  int right = (int)minf(y, (float)(w - 1));
  float dl = fabsf(y - (float)(left + 1)) + kFilterEps;
  float dr = fabsf(y - (float)(right + 1)) + kFilterEps;
  return {clampi(left, 0, w - 1), clampi(right, 0, w - 1), dr / (dl + dr), dl / (dl + dr)};
}

// Seen texels (Explorer's reward): the static-wall texel under a pixel, as bits of a packed
// mask. Texel k = floor(w * location) of a line of w texels, clamped to [0, w - 1]; -1 for
// a miss, an agent's line, a line past the counts or without texels, a NaN location, or a
// texel outside the mask's n_bits (nothing is marked there).
MS_FN int pixel_texel(int index, float location, const int32_t* starts, const int32_t* widths,
                      int n_lines, int n_agent_lines, int64_t n_bits) {
  if (index < n_agent_lines || index >= n_lines) return -1;
  int w = widths[index];
  if (w < 1 || !(location == location)) return -1;  // no texels, or NaN
  float f = floorf((float)w * location);
  int k = f <= 0.f ? 0 : (f >= (float)(w - 1) ? w - 1 : (int)f);
  int64_t t = (int64_t)starts[index] + k;
  return t < 0 || t >= n_bits ? -1 : (int)t;
}

// Texel t's word and bit in a packed mask: bit t % 32 of word t / 32.
MS_FN int seen_word(int t) { return t >> 5; }
MS_FN int32_t seen_bit(int t) { return (int32_t)(1u << (t & 31)); }

// Cosine between a ray u (of length ulen) and a line's direction d.
// In scalars too: SIMD loops over pixels vectorise only without the Vec struct (GCC 12).
// The length of a line's direction (dx, dy).
MS_FN float line_norm(float dx, float dy) { return sqrtf(dx * dx + dy * dy); }
// ray_line_cos given that length (the CPU shades from a table of each line's d and |d|).
MS_FN float ray_line_cos(float ux, float uy, float ulen, float dx, float dy, float dnorm) {
  return (ux * dx + uy * dy) / (ulen * dnorm + kDotEps);
}
MS_FN float ray_line_cos(float ux, float uy, float ulen, float dx, float dy) {
  return ray_line_cos(ux, uy, ulen, dx, dy, line_norm(dx, dy));
}
MS_FN float ray_line_cos(Vec u, float ulen, Vec d) { return ray_line_cos(u.x, u.y, ulen, d.x, d.y); }

// The static lighting at fraction f.wl/f.wr between two texels, from the baked buffer.
MS_FN float baked_light(const float* baked, int start, const Filter& f) {
  return f.wl * baked[start + f.left] + f.wr * baked[start + f.right];
}

struct Pixel {
  int index;
  float location, dot, distance;
  float rgb[3];
};

// Colour, depth and line of one pixel given its hit. u is the rotated ray direction.
// The light on an agent's line at c: the scene's lights, shadows included (intensity_at).
// The CPU passes a SIMD twin of the same arithmetic.
struct SceneLight {
  const Env* env;
  MS_FN float operator()(Vec c) const { return intensity_at(*env, c); }
};

template <class AgentLight>
MS_FN Pixel shade_with(const Env& env, Vec u, Hit h, const AgentLight& agent_light) {
  Pixel px = {-1, 0.f, 0.f, INFINITY, {0.f, 0.f, 0.f}};
  if (h.index < 0) return px;
  float ulen = norm(u);
  Line l = env_line(env, h.index);
  Vec d = l.b - l.a;
  px.index = h.index;
  px.location = h.t;
  px.dot = ray_line_cos(u, ulen, d);
  px.distance = h.s * ulen;

  int w = env.texel_widths[h.index];
  int start = env.texel_starts[h.index];
  // A line whose texels fall outside the texture buffer is drawn black, never read.
  if (w < 1 || start < 0 || start > env.n_texel_capacity - w) return px;
  Filter f = texture_filter(h.t, w);
  float light;
  if (h.index < env.n_agent_lines) {
    light = agent_light(l.a + h.t * d);
  } else {
    light = baked_light(env.baked, start, f);
  }
  float shading = (1.f - px.dot * px.dot) * light;
  const float* tl = env.textures + 3 * (start + f.left);
  const float* tr = env.textures + 3 * (start + f.right);
  for (int c = 0; c < 3; ++c) px.rgb[c] = shading * (f.wl * tl[c] + f.wr * tr[c]);
  return px;
}
MS_FN Pixel shade(const Env& env, Vec u, Hit h) { return shade_with(env, u, h, SceneLight{&env}); }

// Rotated ray direction (x, y) of pixel r of R for an agent whose angle has cos c and sin
// s; in scalars for SIMD loops (GCC 12 does not vectorise through the Vec struct).
MS_FN void pixel_ray_xy(int r, int R, float tan_half_fov, float c, float s, float& x, float& y) {
  float v = pixel_slope(r, R, tan_half_fov);
  x = c - s * v;
  y = s + c * v;
}
MS_FN Vec pixel_ray(int r, int R, float tan_half_fov, float c, float s) {
  Vec u;
  pixel_ray_xy(r, R, tan_half_fov, c, s, u.x, u.y);
  return u;
}

// Near-plane ray parameter for a ray u: the camera sees nothing within `radius`.
MS_FN float near_plane(Vec u, float radius) { return radius / norm(u); }

// Everything about one pixel of one agent's camera: cast, then shade.
MS_FN Pixel render_pixel(const Env& env, Vec p, Vec u, float radius) {
  return shade(env, u, cast(env, p, u, near_plane(u, radius)));
}

// ---------------------------------------------------------------------------------------
// Physics
//
// Agents are discs of radius R moving uniformly over the step (time t in [0, 1]) by their
// motion m = velocity/fps. physics_env simulates one env's step as a sequence of contact
// events in time order:
//
// - Each agent's path is piecewise linear: a segment starts at time t0 from position P0
//   (the step's start, or its last contact) with motion m (zero once it is at rest).
// - An event is the earliest contact of a moving agent with a wall (wall_contact:
//   megastep's rules, 1.001*R) or of a pair of agents (pair_event: relative motion,
//   1.001*2R), computed from the segment(s) involved. Its time is the contact backed off
//   by megastep's 0.99 over the segment: b = t0 + sensibilise(f)*(1 - t0), f the contact's
//   fraction of the rest of the step; from the step's start, megastep's 0.99*f exactly.
// - The earliest event over the env is resolved at b, where its agents start new segments.
//   stop: the agent at a wall stops there (velocity 0); of two moving agents the one
//   heading faster into the other stops, and the other runs on, meeting the resting disc
//   later if its path really does (so an agent hit from behind or the side is not stopped,
//   and a slow one is not stopped by a fast one's back-off gap). slide removes the normal
//   component of the velocity, bounce reflects it times the restitution; two moving agents
//   get equal and opposite impulses computed once from their relative velocity.
// Every event is found from the paths the agents really take, so no agent comes within
// the contact distances of a wall or another agent at any time of the step (agents that
// start in contact aside), and each stops (stop) within 1% of its motion of its first
// contact with a wall or with where the others really are. Progress is the time of an
// agent's first event (1 if none). An agent alone against walls gets megastep's progress,
// except that the crossing and side rules now hold only where the disc meets the line
// alongside the segment (elsewhere megastep stopped it short: the endpoint rules give the
// real contact).
//
// Bounds: every event takes a contact from a moving agent; an agent with kMaxContacts in a
// step rests for the rest of it (under stop, after its first), its velocity kept for the
// next step, and under slide and bounce an agent that meets one so resting rests too, also
// keeping its velocity (no one-sided impulse, so momentum and energy are kept; the pair
// resolves at the next step). A step has at most A*kMaxContacts events for any number of
// agents A, each O(A^2) pair tests and O(L) wall tests for the agents it changed. The
// bound is reached in practice by clusters pressed together (one disc pushing another into
// a wall under slide makes ever quicker contacts) and discs in sharp wedges of walls.

// 0 for NaN, else 0.99*p clamped to [0, 1].
MS_FN float sensibilise(float p) {
  if (p != p) return 0.f;
  return minf(maxf(kBackoff * p, 0.f), 1.f);
}

// Progress fraction at which a point moving by m from p first comes within r of q,
// or +inf if it does not approach within r. Used for disc-disc and disc-endpoint.
MS_FN float approach(Vec p, Vec m, Vec q, float r) {
  float mm = dot(m, m);
  float s = dot(q - p, m) / mm;
  Vec closest = p + s * m;
  Vec off = closest - q;
  float d2 = dot(off, off);
  if (s > 0.f && d2 < r * r) return s - sqrtf(r * r - d2) / sqrtf(mm);
  return INFINITY;
}

struct Contact {
  float progress;  // sensibilised, 1 if no contact
  Vec normal;      // unit normal pointing from the obstacle towards the agent
};

MS_FN Vec unit(Vec v) {
  float n = norm(v);
  return n > 0.f ? (1.f / n) * v : Vec{0.f, 0.f};
}

// Takes a raw candidate into c if it is earlier (strictly) than c so far. With
// `approaching` set, only a contact the motion m heads into counts (m . normal below
// -kApproach |m|): slide and bounce skip a contact their resolved velocity already leaves
// or runs along.
MS_FN void consider(Contact& c, float candidate, Vec normal, Vec m, bool approaching) {
  if (candidate == INFINITY) return;
  float p = sensibilise(candidate);
  if (p < c.progress && (!approaching || dot(m, normal) < -kApproach * norm(m))) c = {p, normal};
}

// Index of the lowest set bit of x != 0.
MS_FN int lowest_bit(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __ffs((int)x) - 1;
#else
  return __builtin_ctz(x);
#endif
}

// Whether line l can give agent p moving by m a contact within this step: its bounding
// box meets the swept disc's. Every candidate that can beat progress 1 (a raw value below
// 1/kBackoff) places the disc within r of the line somewhere on p + [0, 1/kBackoff] * m, so
// skipping the others changes nothing. touch_box is that box: [lox, hix] x [loy, hiy].
struct TouchBox {
  float lox, hix, loy, hiy;
};
MS_FN TouchBox touch_box(Vec p, Vec m, float r) {
  float reach = 1.f / kBackoff + 1e-3f;
  Vec q = p + reach * m;
  float pad = r * 1.001f + 1e-4f;
  return {minf(p.x, q.x) - pad, maxf(p.x, q.x) + pad, minf(p.y, q.y) - pad, maxf(p.y, q.y) + pad};
}
MS_FN bool may_touch(Line l, const TouchBox& b) {
  return !(maxf(l.a.x, l.b.x) < b.lox || minf(l.a.x, l.b.x) > b.hix ||
           maxf(l.a.y, l.b.y) < b.loy || minf(l.a.y, l.b.y) > b.hiy);
}

#if !defined(__CUDACC__)
// may_touch of 16 consecutive lines (64 floats from l) as bits, in GCC vector extensions
// (the scalar loop does not vectorise: its loads are strided): the same comparisons, with
// minf/maxf's NaN rule, so the same bits.
typedef float TouchF __attribute__((vector_size(64)));
typedef int32_t TouchI __attribute__((vector_size(64)));
inline TouchF vminf(TouchF a, TouchF b) { TouchF m = a < b ? a : b; return b != b ? a : m; }
inline TouchF vmaxf(TouchF a, TouchF b) { TouchF m = a > b ? a : b; return b != b ? a : m; }
inline uint32_t may_touch16(const TouchBox& b, const float* l) {
  TouchF v0, v1, v2, v3;
  __builtin_memcpy(&v0, l, 64);
  __builtin_memcpy(&v1, l + 16, 64);
  __builtin_memcpy(&v2, l + 32, 64);
  __builtin_memcpy(&v3, l + 48, 64);
  // (ax, ay, bx, by) of 16 lines to one vector per coordinate
  const TouchI a_of = {0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29};
  const TouchI b_of = {2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31};
  const TouchI x_of = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
  const TouchI y_of = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
  TouchF a01 = __builtin_shuffle(v0, v1, a_of), b01 = __builtin_shuffle(v0, v1, b_of);
  TouchF a23 = __builtin_shuffle(v2, v3, a_of), b23 = __builtin_shuffle(v2, v3, b_of);
  TouchF ax = __builtin_shuffle(a01, a23, x_of), ay = __builtin_shuffle(a01, a23, y_of);
  TouchF bx = __builtin_shuffle(b01, b23, x_of), by = __builtin_shuffle(b01, b23, y_of);
  TouchI out = (vmaxf(ax, bx) < b.lox) | (vminf(ax, bx) > b.hix) | (vmaxf(ay, by) < b.loy) |
               (vminf(ay, by) > b.hiy);
  uint32_t bits = 0;
  for (int k = 0; k < 16; ++k) bits |= (uint32_t)(out[k] == 0) << k;
  return bits;
}
#endif

// Earliest contact of a disc at p moving by m with the static lines (megastep's rules plus
// the band). Candidates are considered in a fixed order (per line: crossing, the two
// endpoints, the side, the band) and a later one wins only if strictly smaller.
MS_FN Contact wall_contact(const Env& env, Vec p, Vec m, float radius, bool approaching) {
  Contact c = {1.f, {0.f, 0.f}};
  float r = kContactScale * radius;
  float mlen = norm(m);
  const TouchBox box = touch_box(p, m, r);
  // Lines in blocks of 16: the bounding-box test of a whole block first (in vector code on
  // the CPU), then the few lines it keeps, in index order.
  for (int j0 = env.n_agent_lines; j0 < env.n_lines; j0 += 16) {
    const int nb = env.n_lines - j0 < 16 ? env.n_lines - j0 : 16;
    uint32_t keep = 0;
#if !defined(__CUDACC__)
    if (nb == 16) keep = may_touch16(box, env.lines + 4 * j0);
    else
#endif
      for (int k = 0; k < nb; ++k) keep |= (uint32_t)may_touch(load_line(env.lines, j0 + k), box) << k;
    for (; keep != 0; keep &= keep - 1) {
      const int j = j0 + lowest_bit(keep);
      Line l = load_line(env.lines, j);
      Vec d = l.b - l.a;
      float dd = dot(d, d);
      float dlen = sqrtf(dd);
      float dp = fabsf(cross(p - l.a, d)) / dlen;  // distance of p to the infinite line
      // normal of the line, on the side of p
      Vec n = unit(Vec{-d.y, d.x});
      if (dot(p - l.a, n) < 0.f) n = -1.f * n;

      // crossing the line, where the disc meets it alongside the segment (megastep took any
      // crossing, stopping early where the disc would meet the line beyond the segment's
      // end: the endpoint rules below give the real contact there)
      float denom = cross(m, d);
      float s = cross(l.a - p, d) / denom;
      float t = cross(l.a - p, m) / denom;
      if (s > 0.f && s < 1.f && t > 0.f && t < 1.f) {
        float xs = (1.f - r / dp) * s;
        float ts = dot(p + maxf(xs, 0.f) * m - l.a, d) / dd;
        if (ts >= 0.f && ts <= 1.f) consider(c, xs, n, m, approaching);
      }

      // touching an endpoint
      if (mlen > 0.f) {
        float ca = approach(p, m, l.a, r);
        if (ca != INFINITY) consider(c, ca, unit(p + minf(maxf(ca, 0.f), 1.f) * m - l.a), m, approaching);
        float cb = approach(p, m, l.b, r);
        if (cb != INFINITY) consider(c, cb, unit(p + minf(maxf(cb, 0.f), 1.f) * m - l.b), m, approaching);
      }

      // ending the step within r of the line's side, where the disc meets it alongside the
      // segment (as for the crossing)
      Vec q = p + m;
      float tq = dot(q - l.a, d) / dd;
      if (tq > 0.f && tq < 1.f) {
        Vec foot = l.a + tq * d;
        float dq = norm(q - foot);
        float xq = (dp - r) / (dp - dq);
        float tx = dot(p + maxf(xq, 0.f) * m - l.a, d) / dd;
        if (dq < r && tx >= 0.f && tx <= 1.f) consider(c, xq, n, m, approaching);
      }

      // entering the band within r of the line where it has the segment alongside: the
      // crossing and side rules above test the foot of the crossing point and of the end
      // point only, so a shallow motion past a wall's end could clip its interior unseen.
      // Moving towards the line from within the band (a start in contact, or just inside it
      // by rounding) gives a candidate <= 0: stay.
      float sq = dot(q - l.a, n);  // signed distance of the end point, > 0 on p's side
      if (sq < r && sq < dp) {
        float xc = (dp - r) / (dp - sq);
        float tc = dot(p + maxf(xc, 0.f) * m - l.a, d) / dd;
        if (tc >= 0.f && tc <= 1.f) consider(c, xc, n, m, approaching);
      }
    }
  }
  return c;
}

// Wraps degrees into [-180, 180).
MS_FN float wrap_degrees(float a) {
  float w = fmodf(a + 180.f, 360.f);
  if (w < 0.f) w += 360.f;
  return w - 180.f;
}

constexpr int kMaxContacts = 8;  // contacts per agent per step under slide and bounce

// One env's agents during the event loop; every array holds n_agents entries (x, y pairs
// for positions and velocities). See physics_env.
struct Bodies {
  float* p0;        // (A, 2) position at the start of the agent's current segment
  float* v;         // (A, 2) velocity
  float* t0;        // (A,) time its current segment started
  float* contacts;  // (A,) contacts so far; kMaxContacts: at rest for the rest of the step
  float* first;     // (A,) time of its first event, 1 if none: the progress
  float fps;
};
MS_FN bool live(const Bodies& b, int i) { return b.contacts[i] < (float)kMaxContacts; }
MS_FN Vec velocity_of(const Bodies& b, int i) { return {b.v[2 * i], b.v[2 * i + 1]}; }
MS_FN Vec motion_of(const Bodies& b, int i) {
  return live(b, i) ? Vec{b.v[2 * i] / b.fps, b.v[2 * i + 1] / b.fps} : Vec{0.f, 0.f};
}
// Where agent i is at time t of the step (t >= its segment's start).
MS_FN Vec position_at(const Bodies& b, int i, float t) {
  return Vec{b.p0[2 * i], b.p0[2 * i + 1]} + (t - b.t0[i]) * motion_of(b, i);
}

struct Event {
  float time;  // backed off, in [0, 1]; +inf for none
  Vec normal;  // towards the (first) agent
};

// Agent i's next wall event, from the start of its current segment.
MS_FN Event wall_event(const Env& env, const Bodies& b, int i, float radius, bool approaching) {
  float t0 = b.t0[i], rest = 1.f - t0;
  Contact c = wall_contact(env, Vec{b.p0[2 * i], b.p0[2 * i + 1]}, rest * motion_of(b, i), radius,
                           approaching);
  if (!(c.progress < 1.f)) return {INFINITY, {0.f, 0.f}};
  return {t0 + c.progress * rest, c.normal};
}

// The next contact event of agents i < j, from the later of their segments' starts. With
// `approaching` (slide, bounce), only where their relative motion heads into the other by
// more than kApproach of its length: after an impulse it runs along their normal.
MS_FN Event pair_event(const Bodies& b, int i, int j, float radius, bool approaching) {
  float tp = maxf(b.t0[i], b.t0[j]), rest = 1.f - tp;
  Vec pi = position_at(b, i, tp), pj = position_at(b, j, tp);
  Vec rel = rest * (motion_of(b, i) - motion_of(b, j));
  float f = approach(pi, rel, pj, kContactScale * 2.f * radius);
  if (f == INFINITY) return {INFINITY, {0.f, 0.f}};
  Vec gap = pj - pi;
  if (approaching && !(dot(gap, rel) > kApproach * norm(rel) * norm(gap))) return {INFINITY, {0.f, 0.f}};
  float s = sensibilise(f);
  if (!(s < 1.f)) return {INFINITY, {0.f, 0.f}};
  return {tp + s * rest, unit(pi + minf(maxf(f, 0.f), 1.f) * rel - pj)};
}

// Starts agent i's new segment at time t (where it is then).
MS_FN void restart(Bodies& b, int i, float t) {
  Vec p = position_at(b, i, t);
  b.p0[2 * i] = p.x;
  b.p0[2 * i + 1] = p.y;
  b.t0[i] = t;
}

MS_FN void set_velocity(Bodies& b, int i, Vec v) {
  b.v[2 * i] = v.x;
  b.v[2 * i + 1] = v.y;
}

// Agent i's contact at time t with an obstacle it cannot move (a wall, a resting agent, or
// under stop any agent): stop, or its velocity's normal component removed or reflected.
MS_FN void resolve_one(Bodies& b, int i, Vec n, float t, int collision, float restitution) {
  b.first[i] = minf(b.first[i], t);
  if (collision == kStop) {
    set_velocity(b, i, {0.f, 0.f});
    b.contacts[i] = (float)kMaxContacts;
    return;
  }
  Vec v = velocity_of(b, i);
  float vn = dot(v, n);
  float k = collision == kBounce ? 1.f + restitution : 1.f;
  if (vn < 0.f) set_velocity(b, i, v - (k * vn) * n);
  b.contacts[i] += 1.f;
}

// Resolves agent i's wall event, or the pair event of i and j (j >= 0).
MS_FN void resolve(Bodies& b, int i, int j, Event e, int collision, float restitution) {
  bool li = live(b, i), lj = j >= 0 && live(b, j);
  Vec mi = motion_of(b, i), mj = j >= 0 ? motion_of(b, j) : Vec{0.f, 0.f};
  restart(b, i, e.time);
  if (j >= 0) restart(b, j, e.time);
  if (j < 0 || (collision == kStop && !lj)) {
    resolve_one(b, i, e.normal, e.time, collision, restitution);
  } else if (collision == kStop && !li) {
    resolve_one(b, j, -1.f * e.normal, e.time, collision, restitution);
  } else if (!li || !lj) {
    // slide, bounce: meeting an agent at rest past its contact bound, the moving one rests
    // too, its velocity kept (no one-sided impulse: momentum and energy are kept)
    int k = li ? i : j;
    b.first[k] = minf(b.first[k], e.time);
    b.contacts[k] = (float)kMaxContacts;
  } else if (collision == kStop) {
    // the one heading faster into the other stops; the other runs on, and meets the
    // stopped one's resting disc if its path really does (a later event)
    if (-dot(mi, e.normal) >= dot(mj, e.normal))
      resolve_one(b, i, e.normal, e.time, collision, restitution);
    else
      resolve_one(b, j, -1.f * e.normal, e.time, collision, restitution);
  } else {
    // equal masses: equal and opposite impulses from the relative normal velocity
    Vec vi = velocity_of(b, i), vj = velocity_of(b, j);
    float vn = dot(vi - vj, e.normal);
    float k = collision == kBounce ? 1.f + restitution : 1.f;
    if (vn < 0.f) {
      Vec impulse = (0.5f * k * vn) * e.normal;
      set_velocity(b, i, vi - impulse);
      set_velocity(b, j, vj + impulse);
    }
    b.first[i] = minf(b.first[i], e.time);
    b.first[j] = minf(b.first[j], e.time);
    b.contacts[i] += 1.f;
    b.contacts[j] += 1.f;
  }
}

// One physics step of one env's n_agents agents; see the comment at the top of this
// section. Outputs: positions, velocities (A, 2), angles, angular velocities, progress
// (A,), each its own buffer. The velocity, angle, angular-velocity and progress outputs
// hold the event loop's state until the end (so no scratch memory is needed).
// wall_cache, (A, 3) or nullptr, keeps each agent's next wall event between events
// instead of recomputing it (same numbers either way).
// stop: position at progress x, angle turned by x of its turn, and where x < 1 velocity
// and angular velocity zeroed (megastep). slide and bounce: the full turn, angular
// velocity kept (turning is not obstructed by a disc).
MS_FN void physics_env(const Env& env, const float* positions, const float* velocities,
                       const float* angles, const float* angvelocities, int n_agents, float fps,
                       float radius, int collision, float restitution, float* pos_out,
                       float* vel_out, float* ang_out, float* angv_out, float* progress_out,
                       float* wall_cache) {
  Bodies b = {pos_out, vel_out, ang_out, angv_out, progress_out, fps};
  for (int i = 0; i < n_agents; ++i) {
    b.p0[2 * i] = positions[2 * i];
    b.p0[2 * i + 1] = positions[2 * i + 1];
    b.v[2 * i] = velocities[2 * i];
    b.v[2 * i + 1] = velocities[2 * i + 1];
    b.t0[i] = 0.f;
    b.contacts[i] = 0.f;
    b.first[i] = 1.f;
  }
  bool approaching = collision != kStop;
  auto refresh = [&](int i) {
    if (!wall_cache) return;
    Event w = live(b, i) ? wall_event(env, b, i, radius, approaching) : Event{INFINITY, {0.f, 0.f}};
    wall_cache[3 * i] = w.time;
    wall_cache[3 * i + 1] = w.normal.x;
    wall_cache[3 * i + 2] = w.normal.y;
  };
  for (int i = 0; i < n_agents; ++i) refresh(i);
  // Each event takes a contact from a live agent (kMaxContacts under stop), so this bound
  // is never the one that ends the loop.
  int max_events = n_agents * kMaxContacts + 1;
  for (int k = 0; k < max_events; ++k) {
    Event best = {INFINITY, {0.f, 0.f}};
    int bi = -1, bj = -1;
    for (int i = 0; i < n_agents; ++i) {
      bool li = live(b, i);
      if (li) {
        Event w = wall_cache ? Event{wall_cache[3 * i], {wall_cache[3 * i + 1], wall_cache[3 * i + 2]}}
                             : wall_event(env, b, i, radius, approaching);
        if (w.time < best.time) { best = w; bi = i; bj = -1; }
      }
      for (int j = i + 1; j < n_agents; ++j) {
        if (!li && !live(b, j)) continue;
        Event e = pair_event(b, i, j, radius, approaching);
        if (e.time < best.time) { best = e; bi = i; bj = j; }
      }
    }
    if (bi < 0) break;
    resolve(b, bi, bj, best, collision, restitution);
    refresh(bi);
    if (bj >= 0) refresh(bj);
  }
  for (int i = 0; i < n_agents; ++i) {
    Vec p = position_at(b, i, 1.f);
    pos_out[2 * i] = p.x;
    pos_out[2 * i + 1] = p.y;
    float x = progress_out[i], w = angvelocities[i];
    if (collision == kStop) {
      ang_out[i] = wrap_degrees(angles[i] + x * w / fps);
      angv_out[i] = x < 1.f ? 0.f : w;
    } else {
      ang_out[i] = wrap_degrees(angles[i] + w / fps);
      angv_out[i] = w;
    }
  }
}

}  // namespace megastep
