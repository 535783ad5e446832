// XLA FFI plumbing shared by the CPU and CUDA handlers: buffer types, errors, and the
// signatures of the three kernels, bound once with the platform's context type.
#pragma once

#include <string>

#include "operands.h"
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
//        model, angles, positions, fov, radius) -> (indices, locations, dots, distances, screen)
template <class Ctx>
auto render_binding() {
  return ffi::Ffi::Bind()
      .Ctx<Ctx>()
      .template Arg<F32>().template Arg<S32>().template Arg<F32>().template Arg<S32>()
      .template Arg<F32>().template Arg<S32>().template Arg<S32>().template Arg<F32>()
      .template Arg<F32>().template Arg<F32>().template Arg<F32>().template Arg<F32>()
      .template Arg<F32>()
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

}  // namespace megastep_ffi
