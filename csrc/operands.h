// Operand layouts of the three kernels, shared by the CPU and CUDA handlers: the shape
// checks (host) and the pointer arithmetic that finds one env's data (host and device).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "batching.h"
#include "megastep.h"

namespace megastep {

using Dims = std::vector<int64_t>;

// Sizes of one kernel call: envs, lines, lights, texels, agents, pixels.
struct Sizes {
  int64_t E = 0, L = 0, NL = 0, T = 0, A = 0, R = 0;
  int64_t C = 0, K = 0;  // grid cells and cell entries (padded capacities)
};

// Operand positions, in the order the Python wrappers pass them.
enum SceneryOperand : int { kLines = 0, kNLines, kLights, kNLights, kTextures, kStarts, kWidths, kBaked };
enum RenderOperand : int {
  kModel = 8, kAngles, kPositions, kFov, kRadius, kGridCells, kGridLines, kGridOrigin, kGridDims,
  kRenderOperands
};
enum PhysicsOperand : int {
  kPLines = 0, kPNLines, kPPositions, kPVelocity, kPAngles, kPAngvelocity, kPFps, kPRadius,
  kPRestitution, kPhysicsOperands
};
enum BakeOperand : int { kBLines = 0, kBNLines, kBLights, kBNLights, kBStarts, kBWidths, kBakeOperands };

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
inline std::string render_layout(const std::vector<Dims>& dims, const Dims& out, Batching& b, Sizes& s) {
  const char* names[] = {"lines", "n_lines", "lights", "n_lights", "textures", "texel_starts",
                         "texel_widths", "baked", "model", "angles", "positions", "fov", "radius",
                         "grid_cells", "grid_lines", "grid_origin", "grid_dims"};
  // Core ranks include the env axis E: everything before it is a vmap batch axis.
  const int ranks[] = {4, 1, 3, 1, 3, 2, 2, 2, 3, 2, 3, 0, 0, 2, 2, 2, 2};
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
  const char* names[] = {"lines", "n_lines", "positions", "velocity", "angles", "angvelocity",
                         "fps", "radius", "restitution"};
  const int ranks[] = {4, 1, 3, 3, 2, 2, 0, 0, 0};
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
  const char* names[] = {"lines", "n_lines", "lights", "n_lights", "texel_starts", "texel_widths"};
  const int ranks[] = {4, 1, 3, 1, 2, 2};
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

#undef MS_CHECK

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
