// The CPU handlers' one parallel loop over XLA's intra-op thread pool (cpu_kernels.cc and
// Moving Symbols' draw_cpu.h).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace megastep_cpu {

// Below this many inner-loop operations a call runs on the calling thread: waking the pool
// costs more than it saves, and a busy machine may not schedule the helper for a while.
constexpr int64_t kParallelWork = 1 << 18;

// Runs f(i) for i in [0, n) on the calling thread and the pool; `work` estimates the total
// inner-loop operations. Completion never depends on a scheduled task starting: the caller
// claims chunks too, and a task that starts late finds none left and returns.
template <class F>
void parallel_for(xla::ffi::ThreadPool& pool, int64_t n, int64_t work, const F& f) {
  int64_t threads = std::max<int64_t>(1, pool.num_threads());
  if (n <= 1 || threads <= 1 || work < kParallelWork) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  int64_t chunk = std::max<int64_t>(1, n / (threads * 8));
  int64_t n_chunks = (n + chunk - 1) / chunk;
  struct Counter {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto counter = std::make_shared<Counter>();
  auto run = [counter, n, chunk, n_chunks, &f]() {
    for (int64_t c; (c = counter->next.fetch_add(1)) < n_chunks;) {
      int64_t end = std::min(n, (c + 1) * chunk);
      for (int64_t i = c * chunk; i < end; ++i) f(i);
      counter->done.fetch_add(1, std::memory_order_release);
    }
  };
  int64_t helpers = std::min(threads - 1, n_chunks - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([run]() { run(); });
  run();
  while (counter->done.load(std::memory_order_acquire) < n_chunks) std::this_thread::yield();
}

}  // namespace megastep_cpu
