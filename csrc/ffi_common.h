// XLA FFI plumbing shared by the CPU, CUDA and emulated CUDA handlers: buffer types, errors,
// and the signatures of the three kernels, bound once with the platform's context type (the
// CUDA file adds a scratch allocator after the results).
#pragma once

#include <string>

#include "operands.h"
#include "pybind11/pybind11.h"
#include "xla/ffi/api/ffi.h"

namespace megastep_ffi {

namespace ffi = xla::ffi;

using F32 = ffi::Buffer<ffi::F32>;
using S32 = ffi::Buffer<ffi::S32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;
using S32Out = ffi::ResultBuffer<ffi::S32>;

inline ffi::Error invalid(const std::string& msg) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, "megastep: " + msg);
}

template <class B>
megastep::Dims dims_of(const B& buf) {
  auto d = buf.dimensions();
  return megastep::Dims(d.begin(), d.end());
}

// render(lines, n_lines, lights, n_lights, textures, texel_starts, texel_widths, baked,
//        model, angles, positions, fov, radius, grid_cells, grid_lines, grid_origin, grid_dims;
//        traversal) -> (indices, locations, dots, distances, screen)
template <class Ctx>
auto render_binding() {
  return ffi::Ffi::Bind()
      .Ctx<Ctx>()
      .template Arg<F32>().template Arg<S32>().template Arg<F32>().template Arg<S32>()
      .template Arg<F32>().template Arg<S32>().template Arg<S32>().template Arg<F32>()
      .template Arg<F32>().template Arg<F32>().template Arg<F32>().template Arg<F32>()
      .template Arg<F32>()
      .template Arg<S32>().template Arg<S32>().template Arg<F32>().template Arg<S32>()
      .template Attr<int32_t>("traversal")
      .template Ret<S32>().template Ret<F32>().template Ret<F32>().template Ret<F32>()
      .template Ret<F32>();
}

// physics(lines, n_lines, positions, velocity, angles, angvelocity, fps, radius, restitution;
//         collision) -> (positions, velocity, angles, angvelocity, progress)
template <class Ctx>
auto physics_binding() {
  return ffi::Ffi::Bind()
      .Ctx<Ctx>()
      .template Arg<F32>().template Arg<S32>().template Arg<F32>().template Arg<F32>()
      .template Arg<F32>().template Arg<F32>().template Arg<F32>().template Arg<F32>()
      .template Arg<F32>()
      .template Attr<int32_t>("collision")
      .template Ret<F32>().template Ret<F32>().template Ret<F32>().template Ret<F32>()
      .template Ret<F32>();
}

// bake(lines, n_lines, lights, n_lights, texel_starts, texel_widths; n_agents) -> baked
template <class Ctx>
auto bake_binding() {
  return ffi::Ffi::Bind()
      .Ctx<Ctx>()
      .template Arg<F32>().template Arg<S32>().template Arg<F32>().template Arg<S32>()
      .template Arg<S32>().template Arg<S32>()
      .template Attr<int32_t>("n_agents")
      .template Ret<F32>();
}

// The Python module's `registrations()`: FFI target name -> handler capsule, as
// jax.ffi.register_ffi_target takes them. The names are megastep_{render,physics,bake} plus
// `suffix` (the emulated CUDA handlers are CPU targets beside the CPU kernels').
template <class R, class P, class B>
pybind11::dict registrations(R* render, P* physics, B* bake, const std::string& suffix = "",
                             XLA_FFI_Error* (*draw)(XLA_FFI_CallFrame*) = nullptr) {
  auto capsule = [](auto* fn) {
    static_assert(std::is_invocable_r_v<XLA_FFI_Error*, decltype(fn), XLA_FFI_CallFrame*>,
                  "an XLA FFI handler must have the XLA FFI signature");
    return pybind11::capsule(reinterpret_cast<void*>(fn));
  };
  pybind11::dict d;
  d[pybind11::str("megastep_render" + suffix)] = capsule(render);
  d[pybind11::str("megastep_physics" + suffix)] = capsule(physics);
  d[pybind11::str("megastep_bake" + suffix)] = capsule(bake);
  if (draw) d[pybind11::str("megastep_draw" + suffix)] = capsule(draw);  // Moving Symbols' draw kernel (CPU)
  return d;
}

}  // namespace megastep_ffi
