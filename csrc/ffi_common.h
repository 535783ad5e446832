// XLA FFI plumbing shared by the CPU, CUDA and emulated CUDA handlers: buffer types, errors,
// and the signatures of the kernels, bound once with the platform's context type (the
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

// The bindings and the handlers' parameter lists, generated from the lists in operands.h:
//   ffi::Error RenderImpl(Ctx ctx MEGASTEP_RENDER_PARAMS) binds render_binding<Ctx>().
#define MS_ARG(name, type, rank) .template Arg<type>()
#define MS_ATTR(name) .template Attr<int32_t>(#name)
#define MS_RET(name, type, rank) .template Ret<type>()
#define MS_PARAM(name, type, rank) , type name
#define MS_ATTR_PARAM(name) , int32_t name
#define MS_RET_PARAM(name, type, rank) , type##Out name##_out
#define MEGASTEP_RENDER_PARAMS \
  MEGASTEP_RENDER_ARGS(MS_PARAM) MEGASTEP_RENDER_ATTRS(MS_ATTR_PARAM) MEGASTEP_RENDER_RETS(MS_RET_PARAM)
#define MEGASTEP_PHYSICS_PARAMS \
  MEGASTEP_PHYSICS_ARGS(MS_PARAM) MEGASTEP_PHYSICS_ATTRS(MS_ATTR_PARAM) MEGASTEP_PHYSICS_RETS(MS_RET_PARAM)
#define MEGASTEP_BAKE_PARAMS \
  MEGASTEP_BAKE_ARGS(MS_PARAM) MEGASTEP_BAKE_ATTRS(MS_ATTR_PARAM) MEGASTEP_BAKE_RETS(MS_RET_PARAM)
#define MEGASTEP_SEEN_PARAMS \
  MEGASTEP_SEEN_ARGS(MS_PARAM) MEGASTEP_SEEN_ATTRS(MS_ATTR_PARAM) MEGASTEP_SEEN_RETS(MS_RET_PARAM)
// {dims_of(op0), dims_of(op1), ...} of a handler's operands, for the *_layout checks.
#define MS_DIMS_OF(name, type, rank) dims_of(name),

template <class Ctx>
auto render_binding() {
  return ffi::Ffi::Bind().Ctx<Ctx>() MEGASTEP_RENDER_ARGS(MS_ARG) MEGASTEP_RENDER_ATTRS(MS_ATTR)
      MEGASTEP_RENDER_RETS(MS_RET);
}

template <class Ctx>
auto physics_binding() {
  return ffi::Ffi::Bind().Ctx<Ctx>() MEGASTEP_PHYSICS_ARGS(MS_ARG) MEGASTEP_PHYSICS_ATTRS(MS_ATTR)
      MEGASTEP_PHYSICS_RETS(MS_RET);
}

template <class Ctx>
auto bake_binding() {
  return ffi::Ffi::Bind().Ctx<Ctx>() MEGASTEP_BAKE_ARGS(MS_ARG) MEGASTEP_BAKE_ATTRS(MS_ATTR)
      MEGASTEP_BAKE_RETS(MS_RET);
}

template <class Ctx>
auto seen_binding() {
  return ffi::Ffi::Bind().Ctx<Ctx>() MEGASTEP_SEEN_ARGS(MS_ARG) MEGASTEP_SEEN_ATTRS(MS_ATTR)
      MEGASTEP_SEEN_RETS(MS_RET);
}

// The Python module's `interface()`: for each kernel its operands, attributes and results
// in call order ((name, dtype, core rank) tuples; dtype "float32" or "int32"), plus the
// shared constants and the attributes' named values, as the handlers were compiled.
inline const char* dtype_name(const char* token) {
  return std::string(token) == "F32" ? "float32" : "int32";
}
inline pybind11::dict interface() {
  namespace py = pybind11;
#define MS_ENTRY(name, type, rank) list.append(py::make_tuple(#name, dtype_name(#type), rank));
#define MS_ATTR_ENTRY(name) list.append(py::str(#name));
  auto kernel = [](auto args, auto attrs, auto rets) {
    py::dict d;
    d["args"] = args();
    d["attrs"] = attrs();
    d["results"] = rets();
    return d;
  };
  py::dict d;
  d["render"] = kernel([] { py::list list; MEGASTEP_RENDER_ARGS(MS_ENTRY) return list; },
                       [] { py::list list; MEGASTEP_RENDER_ATTRS(MS_ATTR_ENTRY) return list; },
                       [] { py::list list; MEGASTEP_RENDER_RETS(MS_ENTRY) return list; });
  d["physics"] = kernel([] { py::list list; MEGASTEP_PHYSICS_ARGS(MS_ENTRY) return list; },
                        [] { py::list list; MEGASTEP_PHYSICS_ATTRS(MS_ATTR_ENTRY) return list; },
                        [] { py::list list; MEGASTEP_PHYSICS_RETS(MS_ENTRY) return list; });
  d["bake"] = kernel([] { py::list list; MEGASTEP_BAKE_ARGS(MS_ENTRY) return list; },
                     [] { py::list list; MEGASTEP_BAKE_ATTRS(MS_ATTR_ENTRY) return list; },
                     [] { py::list list; MEGASTEP_BAKE_RETS(MS_ENTRY) return list; });
  d["seen"] = kernel([] { py::list list; MEGASTEP_SEEN_ARGS(MS_ENTRY) return list; },
                     [] { py::list list; MEGASTEP_SEEN_ATTRS(MS_ATTR_ENTRY) return list; },
                     [] { py::list list; MEGASTEP_SEEN_RETS(MS_ENTRY) return list; });
#undef MS_ENTRY
#undef MS_ATTR_ENTRY
  py::dict constants;
#define MS_CONSTANT(py_name, cc_name) constants[#py_name] = megastep::cc_name;
  MEGASTEP_CONSTANTS(MS_CONSTANT)
#undef MS_CONSTANT
  d["constants"] = constants;
  py::dict enums;
#define MS_ENUM_VALUE(attr, py_name, cc_value)                                   \
  if (!enums.contains(#attr)) enums[#attr] = py::dict();                          \
  enums[#attr].cast<py::dict>()[#py_name] = (int)megastep::cc_value;
  MEGASTEP_ENUMS(MS_ENUM_VALUE)
#undef MS_ENUM_VALUE
  d["enums"] = enums;
  return d;
}

// The Python module's `registrations()`: FFI target name -> handler capsule, as
// jax.ffi.register_ffi_target takes them. The names are megastep_{render,physics,bake,seen} plus
// `suffix` (the emulated CUDA handlers are CPU targets beside the CPU kernels').
template <class R, class P, class B, class S>
pybind11::dict registrations(R* render, P* physics, B* bake, S* seen, const std::string& suffix = "",
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
  d[pybind11::str("megastep_seen" + suffix)] = capsule(seen);
  if (draw) d[pybind11::str("megastep_draw" + suffix)] = capsule(draw);  // Moving Symbols' draw kernel (CPU)
  return d;
}

}  // namespace megastep_ffi
