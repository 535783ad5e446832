// Operand layouts of the kernels, shared by the CPU and CUDA handlers: the shape
// checks (host) and the pointer arithmetic that finds one env's data (host and device).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "batching.h"
#include "megastep.h"

// ---------------------------------------------------------------------------------------
// The kernel interface, written once. Each kernel's operands in call order as
// X(name, dtype, core rank) (the core rank counts the env axis; vmap batch axes come
// before it), its int32 attributes as A(name), its results as X(name, dtype, rank). The FFI
// bindings, the handlers' parameter lists, the shape checks' names and ranks, the operand
// enums below and the table the Python module exports (megastep_jax/kernels.py orders its
// ffi_call operands by these names) are all generated from these lists: reordering or
// renaming an operand here changes every side at once, and a Python wrapper whose operand
// names no longer match fails at import.
#define MEGASTEP_RENDER_ARGS(X)                                                                \
  X(lines, F32, 4) X(n_lines, S32, 1) X(lights, F32, 3) X(n_lights, S32, 1) X(textures, F32, 3) \
  X(texel_starts, S32, 2) X(texel_widths, S32, 2) X(baked, F32, 2) X(model, F32, 3)            \
  X(angles, F32, 2) X(positions, F32, 3) X(fov, F32, 0) X(radius, F32, 0)                      \
  X(grid_cells, S32, 2) X(grid_lines, S32, 2) X(grid_origin, F32, 2) X(grid_dims, S32, 2)
#define MEGASTEP_RENDER_ATTRS(A) A(traversal)
#define MEGASTEP_RENDER_RETS(X)                                                   \
  X(indices, S32, 3) X(locations, F32, 3) X(dots, F32, 3) X(distances, F32, 3) \
  X(screen, F32, 4)

#define MEGASTEP_PHYSICS_ARGS(X)                                                             \
  X(lines, F32, 4) X(n_lines, S32, 1) X(positions, F32, 3) X(velocity, F32, 3) X(angles, F32, 2) \
  X(angvelocity, F32, 2) X(fps, F32, 0) X(radius, F32, 0) X(restitution, F32, 0)
#define MEGASTEP_PHYSICS_ATTRS(A) A(collision)
#define MEGASTEP_PHYSICS_RETS(X)                                                      \
  X(positions, F32, 3) X(velocity, F32, 3) X(angles, F32, 2) X(angvelocity, F32, 2) \
  X(progress, F32, 2)

#define MEGASTEP_BAKE_ARGS(X)                                                               \
  X(lines, F32, 4) X(n_lines, S32, 1) X(lights, F32, 3) X(n_lights, S32, 1)                 \
  X(texel_starts, S32, 2) X(texel_widths, S32, 2)
#define MEGASTEP_BAKE_ATTRS(A) A(n_agents)
#define MEGASTEP_BAKE_RETS(X) X(baked, F32, 2)

// Marks the texels under rendered pixels in a packed per-env mask (Explorer's seen texels).
// seen: (E, W) int32 words, bit t % 32 of word t / 32 for texel t; indices and locations
// are a render's (E, A, R); geometry (E,) picks each env's row of the (G, L) texel tables.
#define MEGASTEP_SEEN_ARGS(X)                                                              \
  X(seen, S32, 2) X(indices, S32, 3) X(locations, F32, 3) X(geometry, S32, 1)            \
  X(texel_starts, S32, 2) X(texel_widths, S32, 2)
#define MEGASTEP_SEEN_ATTRS(A) A(n_agents)
#define MEGASTEP_SEEN_RETS(X) X(seen, S32, 2) X(new_texels, S32, 1)

// The constants the jnp reference must share with the kernels: X(Python name, C++ name).
#define MEGASTEP_CONSTANTS(X)                                                             \
  X(AMBIENT, kAmbient) X(LUMINANCE, kLuminance) X(SHADOW_REACH, kShadowReach)            \
  X(SHADOW_PARALLEL, kShadowParallel) X(PARALLEL, kParallel) X(TIE_BREAK, kTieBreak)     \
  X(DOT_EPS, kDotEps) X(FILTER_EPS, kFilterEps) X(CONTACT_SCALE, kContactScale)          \
  X(BACKOFF, kBackoff) X(APPROACH, kApproach) X(MODEL_LINES, kModelLines) X(MAX_CONTACTS, kMaxContacts)         \
  X(GRID_PAD, kGridPad) X(GRID_MIN_LINES, kGridMinLines)
// Named int32 attribute values: X(attribute, Python name, C++ value).
#define MEGASTEP_ENUMS(X)                                                                 \
  X(collision, stop, kStop) X(collision, slide, kSlide) X(collision, bounce, kBounce)    \
  X(traversal, grid, kTraverseGrid) X(traversal, brute, kTraverseBrute)                  \
  X(traversal, rays, kTraverseRays) X(traversal, auto, kTraverseAuto)

namespace megastep {

using Dims = std::vector<int64_t>;

// Operand positions generated from the lists: op::render_lines, op::physics_fps, ...
namespace op {
#define MS_RENDER_ENUM(name, type, rank) render_##name,
#define MS_PHYSICS_ENUM(name, type, rank) physics_##name,
#define MS_BAKE_ENUM(name, type, rank) bake_##name,
#define MS_SEEN_ENUM(name, type, rank) seen_##name,
enum Render : int { MEGASTEP_RENDER_ARGS(MS_RENDER_ENUM) render_count };
enum Physics : int { MEGASTEP_PHYSICS_ARGS(MS_PHYSICS_ENUM) physics_count };
enum Bake : int { MEGASTEP_BAKE_ARGS(MS_BAKE_ENUM) bake_count };
enum Seen : int { MEGASTEP_SEEN_ARGS(MS_SEEN_ENUM) seen_count };
#undef MS_RENDER_ENUM
#undef MS_PHYSICS_ENUM
#undef MS_BAKE_ENUM
#undef MS_SEEN_ENUM
}  // namespace op

// Sizes of one kernel call: envs, lines, lights, texels, agents, pixels.
struct Sizes {
  int64_t E = 0, L = 0, NL = 0, T = 0, A = 0, R = 0;
  int64_t C = 0, K = 0;  // grid cells and cell entries (padded capacities)
  int64_t G = 0, W = 0;  // seen: geometries of the texel tables, words per mask
};

// The handlers' names for the operand positions (from the lists above). The scenery's
// are render positions; SceneryPtrs::op maps them to another kernel's.
enum SceneryOperand : int {
  kLines = op::render_lines, kNLines = op::render_n_lines, kLights = op::render_lights,
  kNLights = op::render_n_lights, kTextures = op::render_textures, kStarts = op::render_texel_starts,
  kWidths = op::render_texel_widths, kBaked = op::render_baked
};
enum RenderOperand : int {
  kModel = op::render_model, kAngles = op::render_angles, kPositions = op::render_positions,
  kFov = op::render_fov, kRadius = op::render_radius, kGridCells = op::render_grid_cells,
  kGridLines = op::render_grid_lines, kGridOrigin = op::render_grid_origin,
  kGridDims = op::render_grid_dims, kRenderOperands = op::render_count
};
enum PhysicsOperand : int {
  kPLines = op::physics_lines, kPNLines = op::physics_n_lines, kPPositions = op::physics_positions,
  kPVelocity = op::physics_velocity, kPAngles = op::physics_angles,
  kPAngvelocity = op::physics_angvelocity, kPFps = op::physics_fps, kPRadius = op::physics_radius,
  kPRestitution = op::physics_restitution, kPhysicsOperands = op::physics_count
};
enum BakeOperand : int {
  kBLines = op::bake_lines, kBNLines = op::bake_n_lines, kBLights = op::bake_lights,
  kBNLights = op::bake_n_lights, kBStarts = op::bake_texel_starts, kBWidths = op::bake_texel_widths,
  kBakeOperands = op::bake_count
};
// env_at finds the lines, their counts and lights at the render positions unless
// SceneryPtrs::op maps them: physics (default map) and bake (bake_ptrs) must agree there.
static_assert((int)kPLines == (int)kLines && (int)kPNLines == (int)kNLines, "physics: lines and n_lines must come first");
static_assert((int)kBLines == (int)kLines && (int)kBNLines == (int)kNLines &&
                  (int)kBLights == (int)kLights && (int)kBNLights == (int)kNLights,
              "bake: lines, n_lines, lights and n_lights must come first, in the render order");

struct SceneryPtrs {
  const float* lines = nullptr;
  const int32_t* n_lines = nullptr;
  const float* lights = nullptr;
  const int32_t* n_lights = nullptr;
  const float* textures = nullptr;  // may be null (bake)
  const int32_t* starts = nullptr;
  const int32_t* widths = nullptr;
  const float* baked = nullptr;     // may be null (bake)
  const int32_t* grid_cells = nullptr;  // may be null (no grid)
  const int32_t* grid_lines = nullptr;
  const float* grid_origin = nullptr;
  const int32_t* grid_dims = nullptr;
  int op[8] = {kLines, kNLines, kLights, kNLights, kTextures, kStarts, kWidths, kBaked};
};

// Env e of batch member `flat`, counts clamped so no loop can leave the padded arrays.
MS_FN Env env_at(const Batching& b, int64_t flat, int64_t e, const Sizes& s, const SceneryPtrs& p,
                 int n_agent_lines, const float* agent_lines) {
  Env env;
  auto at = [&](int which) { return b.block(p.op[which], flat) * s.E + e; };
  env.lines = p.lines + at(kLines) * s.L * 4;
  env.agent_lines = agent_lines;
  env.n_agent_lines = n_agent_lines;
  int nl = p.n_lines[at(kNLines)];
  env.n_lines = nl < n_agent_lines ? n_agent_lines : (nl > (int)s.L ? (int)s.L : nl);
  env.lights = p.lights ? p.lights + at(kLights) * s.NL * 3 : nullptr;
  int nlt = p.n_lights ? p.n_lights[at(kNLights)] : 0;
  env.n_lights = nlt < 0 ? 0 : (nlt > (int)s.NL ? (int)s.NL : nlt);
  env.textures = p.textures ? p.textures + at(kTextures) * s.T * 3 : nullptr;
  env.texel_starts = p.starts ? p.starts + at(kStarts) * s.L : nullptr;
  env.texel_widths = p.widths ? p.widths + at(kWidths) * s.L : nullptr;
  env.baked = p.baked ? p.baked + at(kBaked) * s.T : nullptr;
  env.n_texel_capacity = (int)s.T;
  return env;
}

// Env e's acceleration grid (render operands only); an invalid or absent one has nx = 0.
MS_FN Grid grid_at(const Batching& b, int64_t flat, int64_t e, const Sizes& s, const SceneryPtrs& p) {
  Grid g;
  if (!p.grid_cells || !p.grid_lines || !p.grid_origin || !p.grid_dims || s.C < 1) return g;
  auto at = [&](int which) { return b.block(which, flat) * s.E + e; };
  g.cells = p.grid_cells + at(kGridCells) * (s.C + 1);
  g.lines = p.grid_lines + at(kGridLines) * s.K;
  const float* o = p.grid_origin + at(kGridOrigin) * 3;
  const int32_t* d = p.grid_dims + at(kGridDims) * 2;
  g.x0 = o[0]; g.y0 = o[1]; g.cs = o[2];
  g.nx = d[0]; g.ny = d[1];
  g.n_cells = (int)s.C;
  g.n_entries = (int)s.K;
  if (!grid_valid(g)) g.nx = g.ny = 0;
  return g;
}

// ---------------------------------------------------------------------------------------
// Host-side shape checks. Each returns "" or a message naming the operand at fault.

inline Dims tail(const Dims& d, int n) { return Dims(d.end() - n, d.end()); }

inline std::string expect(const char* name, const Dims& got, const Dims& want) {
  if (got == want) return "";
  auto str = [](const Dims& d) {
    std::string s = "(";
    for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
    return s + ")";
  };
  return std::string(name) + ": shape " + str(got) + " where " + str(want) + " was expected";
}

inline std::string expect_batch(const char* name, const Dims& out, const Batching& b, int core) {
  if ((int)out.size() != b.n_axes + core) return std::string(name) + ": output has the wrong rank";
  for (int ax = 0; ax < b.n_axes; ++ax)
    if (out[ax] != b.dims[ax]) return std::string(name) + ": output has the wrong batch axes";
  return "";
}

#define MS_CHECK(expr)                 \
  do {                                 \
    std::string _m = (expr);           \
    if (!_m.empty()) return _m;        \
  } while (0)

// dims: the 17 render operands; out: the indices output (*batch, E, A, R).
#define MS_NAME(name, type, rank) #name,
#define MS_RANK(name, type, rank) rank,
inline std::string render_layout(const std::vector<Dims>& dims, const Dims& out, Batching& b, Sizes& s) {
  const char* names[] = {MEGASTEP_RENDER_ARGS(MS_NAME)};
  // Core ranks include the env axis E: everything before it is a vmap batch axis.
  const int ranks[] = {MEGASTEP_RENDER_ARGS(MS_RANK)};
  MS_CHECK(make_batching(b, kRenderOperands, ranks, names, [&](int op) { return dims[op]; }));
  Dims lines = tail(dims[kLines], 4), lights = tail(dims[kLights], 3);
  Dims tex = tail(dims[kTextures], 3), ang = tail(dims[kAngles], 2);
  s.E = lines[0]; s.L = lines[1]; s.NL = lights[1]; s.T = tex[1]; s.A = ang[1]; s.R = out.back();
  MS_CHECK(expect("lines", lines, {s.E, s.L, 2, 2}));
  MS_CHECK(expect("n_lines", tail(dims[kNLines], 1), {s.E}));
  MS_CHECK(expect("lights", lights, {s.E, s.NL, 3}));
  MS_CHECK(expect("n_lights", tail(dims[kNLights], 1), {s.E}));
  MS_CHECK(expect("textures", tex, {s.E, s.T, 3}));
  MS_CHECK(expect("texel_starts", tail(dims[kStarts], 2), {s.E, s.L}));
  MS_CHECK(expect("texel_widths", tail(dims[kWidths], 2), {s.E, s.L}));
  MS_CHECK(expect("baked", tail(dims[kBaked], 2), {s.E, s.T}));
  MS_CHECK(expect("model", tail(dims[kModel], 3), {kModelLines, 2, 2}));
  MS_CHECK(expect("angles", ang, {s.E, s.A}));
  MS_CHECK(expect("positions", tail(dims[kPositions], 3), {s.E, s.A, 2}));
  Dims cells = tail(dims[kGridCells], 2), entries = tail(dims[kGridLines], 2);
  s.C = cells[1] - 1; s.K = entries[1];
  MS_CHECK(expect("grid_cells", cells, {s.E, std::max<int64_t>(s.C + 1, 1)}));
  MS_CHECK(expect("grid_lines", entries, {s.E, s.K}));
  MS_CHECK(expect("grid_origin", tail(dims[kGridOrigin], 2), {s.E, 3}));
  MS_CHECK(expect("grid_dims", tail(dims[kGridDims], 2), {s.E, 2}));
  MS_CHECK(expect_batch("indices", out, b, 3));
  if (s.L < s.A * kModelLines) return "lines: fewer lines than the agents' model lines";
  return "";
}

// dims: the 9 physics operands; out: the progress output (*batch, E, A).
inline std::string physics_layout(const std::vector<Dims>& dims, const Dims& out, int collision,
                                  Batching& b, Sizes& s) {
  const char* names[] = {MEGASTEP_PHYSICS_ARGS(MS_NAME)};
  const int ranks[] = {MEGASTEP_PHYSICS_ARGS(MS_RANK)};
  MS_CHECK(make_batching(b, kPhysicsOperands, ranks, names, [&](int op) { return dims[op]; }));
  Dims lines = tail(dims[kPLines], 4), ang = tail(dims[kPAngles], 2);
  s.E = lines[0]; s.L = lines[1]; s.A = ang[1];
  MS_CHECK(expect("lines", lines, {s.E, s.L, 2, 2}));
  MS_CHECK(expect("n_lines", tail(dims[kPNLines], 1), {s.E}));
  MS_CHECK(expect("positions", tail(dims[kPPositions], 3), {s.E, s.A, 2}));
  MS_CHECK(expect("velocity", tail(dims[kPVelocity], 3), {s.E, s.A, 2}));
  MS_CHECK(expect("angles", ang, {s.E, s.A}));
  MS_CHECK(expect("angvelocity", tail(dims[kPAngvelocity], 2), {s.E, s.A}));
  MS_CHECK(expect_batch("progress", out, b, 2));
  if (s.L < s.A * kModelLines) return "lines: fewer lines than the agents' model lines";
  if (collision < kStop || collision > kBounce) return "collision: expected 0 (stop), 1 (slide) or 2 (bounce)";
  return "";
}

// dims: the 6 bake operands; out: baked (*batch, E, T).
inline std::string bake_layout(const std::vector<Dims>& dims, const Dims& out, int n_agents,
                               Batching& b, Sizes& s) {
  const char* names[] = {MEGASTEP_BAKE_ARGS(MS_NAME)};
  const int ranks[] = {MEGASTEP_BAKE_ARGS(MS_RANK)};
  MS_CHECK(make_batching(b, kBakeOperands, ranks, names, [&](int op) { return dims[op]; }));
  Dims lines = tail(dims[kBLines], 4), lights = tail(dims[kBLights], 3);
  s.E = lines[0]; s.L = lines[1]; s.NL = lights[1]; s.T = out.back(); s.A = n_agents;
  MS_CHECK(expect("lines", lines, {s.E, s.L, 2, 2}));
  MS_CHECK(expect("n_lines", tail(dims[kBNLines], 1), {s.E}));
  MS_CHECK(expect("lights", lights, {s.E, s.NL, 3}));
  MS_CHECK(expect("n_lights", tail(dims[kBNLights], 1), {s.E}));
  MS_CHECK(expect("texel_starts", tail(dims[kBStarts], 2), {s.E, s.L}));
  MS_CHECK(expect("texel_widths", tail(dims[kBWidths], 2), {s.E, s.L}));
  MS_CHECK(expect_batch("baked", out, b, 2));
  if (n_agents < 0 || s.L < (int64_t)n_agents * kModelLines) return "n_agents: more model lines than lines";
  return "";
}

// dims: the 6 seen operands; out: the seen output (*batch, E, W).
inline std::string seen_layout(const std::vector<Dims>& dims, const Dims& out, int n_agents,
                               Batching& b, Sizes& s) {
  const char* names[] = {MEGASTEP_SEEN_ARGS(MS_NAME)};
  const int ranks[] = {MEGASTEP_SEEN_ARGS(MS_RANK)};
  MS_CHECK(make_batching(b, op::seen_count, ranks, names, [&](int op) { return dims[op]; }));
  Dims seen = tail(dims[op::seen_seen], 2), idx = tail(dims[op::seen_indices], 3);
  Dims starts = tail(dims[op::seen_texel_starts], 2);
  s.E = seen[0]; s.W = seen[1]; s.A = idx[1]; s.R = idx[2]; s.G = starts[0]; s.L = starts[1];
  MS_CHECK(expect("indices", idx, {s.E, s.A, s.R}));
  MS_CHECK(expect("locations", tail(dims[op::seen_locations], 3), {s.E, s.A, s.R}));
  MS_CHECK(expect("geometry", tail(dims[op::seen_geometry], 1), {s.E}));
  MS_CHECK(expect("texel_widths", tail(dims[op::seen_texel_widths], 2), {s.G, s.L}));
  MS_CHECK(expect_batch("seen", out, b, 2));
  if (n_agents < 0) return "n_agents: expected a count >= 0";
  return "";
}

#undef MS_CHECK
#undef MS_NAME
#undef MS_RANK

// The bake operands in SceneryPtrs' terms: no textures or baked, starts and widths moved.
inline SceneryPtrs bake_ptrs(const float* lines, const int32_t* n_lines, const float* lights,
                             const int32_t* n_lights, const int32_t* starts, const int32_t* widths) {
  SceneryPtrs p;
  p.lines = lines; p.n_lines = n_lines; p.lights = lights; p.n_lights = n_lights;
  p.starts = starts; p.widths = widths;
  p.op[kStarts] = kBStarts;
  p.op[kWidths] = kBWidths;
  return p;
}

}  // namespace megastep
