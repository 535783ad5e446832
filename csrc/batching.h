// Leading-axis broadcasting for the FFI handlers, shared by the CPU and CUDA files.
//
// The Python wrappers call jax.ffi.ffi_call with vmap_method="expand_dims": under each
// level of vmap, batched operands gain a leading batch axis and unbatched ones a leading
// axis of size 1. The handlers therefore see every operand as (*batch, *core) with the same
// number of batch axes, and broadcast size-1 axes instead of copying: a scenery shared by
// a vmapped batch is read in place by every member.
#pragma once

#include <cstdint>
#include <string>

#include "megastep.h"

namespace megastep {

constexpr int kMaxBatchAxes = 8;
constexpr int kMaxOperands = 24;

struct Batching {
  int n_axes = 0;
  int n_operands = 0;
  int64_t size = 1;                                   // product of the output batch axes
  int64_t dims[kMaxBatchAxes] = {};                   // output batch axes
  int64_t strides[kMaxOperands][kMaxBatchAxes] = {};  // per operand, in core blocks; 0 to broadcast

  // Index of operand `op`'s core block for flat output batch index `flat`.
  MS_FN int64_t block(int op, int64_t flat) const {
    int64_t offset = 0;
    for (int ax = n_axes - 1; ax >= 0; --ax) {
      int64_t i = flat % dims[ax];
      flat /= dims[ax];
      offset += i * strides[op][ax];
    }
    return offset;
  }
};

// Host side: builds a Batching from each operand's dims and core rank. Returns an empty
// string, or a message naming the operand whose leading axes do not broadcast.
template <class DimsOf>
inline std::string make_batching(Batching& b, int n_operands, const int* core_ranks,
                                 const char* const* names, DimsOf dims_of) {
  if (n_operands > kMaxOperands) return "too many operands";
  b.n_operands = n_operands;
  int n_axes = -1;
  for (int op = 0; op < n_operands; ++op) {
    auto dims = dims_of(op);
    int rank = (int)dims.size();
    int lead = rank - core_ranks[op];
    if (lead < 0)
      return std::string(names[op]) + ": rank " + std::to_string(rank) + " is below its core rank " +
             std::to_string(core_ranks[op]);
    if (n_axes < 0) n_axes = lead;
    if (lead != n_axes)
      return std::string(names[op]) + ": has " + std::to_string(lead) +
             " batch axes where other operands have " + std::to_string(n_axes);
  }
  if (n_axes > kMaxBatchAxes) return "more than 8 nested vmap levels";
  b.n_axes = n_axes;
  for (int ax = 0; ax < n_axes; ++ax) {
    int64_t d = 1;
    for (int op = 0; op < n_operands; ++op) {
      int64_t x = dims_of(op)[ax];
      if (x != 1) {
        if (d != 1 && d != x)
          return std::string(names[op]) + ": batch axis " + std::to_string(ax) + " has size " +
                 std::to_string(x) + ", others " + std::to_string(d);
        d = x;
      }
    }
    b.dims[ax] = d;
  }
  b.size = 1;
  for (int ax = 0; ax < n_axes; ++ax) b.size *= b.dims[ax];
  for (int op = 0; op < n_operands; ++op) {
    auto dims = dims_of(op);
    int64_t stride = 1;
    for (int ax = n_axes - 1; ax >= 0; --ax) {
      b.strides[op][ax] = dims[ax] == 1 ? 0 : stride;
      stride *= dims[ax];
    }
  }
  return "";
}

}  // namespace megastep
