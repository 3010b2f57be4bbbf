// The threads the CPU kernels split their rows over: OpenMP's team, the very threads on which MKL (its GNU
// threading layer, the one locomlx loads) runs the matrix products between the kernels.
//
// With a pool of their own, the kernels' threads and the BLAS's took turns at the cores: each side's threads
// spin for a while after their call in case another comes, on the cores the other side's next call needs.
// Sharing OpenMP's team, a prefill's kernels and products never compete (docs/prefill-gap.md: a 512-token
// SmolLM2-135M forward against MKL on a team of its own), and a decode step's ~200 calls, microseconds apart,
// find the team awake.

#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <functional>

#include <omp.h>

namespace locomlx_kernels {

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads) {}
  int size() const { return threads_; }

  // How many parts to split a large call into: several per thread, as parts are taken by whichever thread is
  // free. (qgemv's decode calls, some 20 microseconds each, keep one part per thread: finer measured no faster.)
  int parts() const { return threads_ == 1 ? 1 : threads_ * kPartsPerThread; }

  // Runs task(part) for every part in [0, parts) and returns when all are done. Each thread of the team takes
  // the next part left: a thread that starts late (its core still busy) leaves its share to the others instead
  // of keeping the call waiting for it. Each calling thread (one per MLX stream) has a team of its own.
  void run(int parts, const std::function<void(int)>& task) const {
    if (threads_ == 1 || parts <= 1) {
      for (int part = 0; part < parts; ++part) task(part);
      return;
    }
    std::atomic<int> next{0};
#pragma omp parallel num_threads(std::min(threads_, parts))
    for (int part = next.fetch_add(1, std::memory_order_relaxed); part < parts;
         part = next.fetch_add(1, std::memory_order_relaxed)) {
      task(part);
    }
  }

 private:
  static constexpr int kPartsPerThread = 8;
  const int threads_;
};

// LOCOMLX_KERNEL_THREADS, else OpenMP's own count (OMP_NUM_THREADS, which locomlx sets for ranks sharing a host,
// else the cores this process may run on).
inline int default_threads() {
  if (const char* env = std::getenv("LOCOMLX_KERNEL_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1, omp_get_max_threads());
}

inline Pool& pool() {
  static Pool instance(default_threads());
  return instance;
}

// How many parts over_parts splits a call into: one per part of the pool when `parallel`, else one.
inline int parts_for(bool parallel) { return parallel ? pool().parts() : 1; }

// Runs body(part, lo, hi) over [0, n) in `parts` ranges (a caller that keeps one partial result per part sizes
// it by the same count it passes here); the bounds between ranges fall on multiples of `align` (8 keeps each
// range's writes on whole AVX vectors). An empty range is skipped.
template <typename Body>
void over_parts(int64_t n, int parts, Body body, int64_t align = 1) {
  if (parts == 1) {
    body(0, int64_t{0}, n);
    return;
  }
  pool().run(parts, [&](int part) {
    const int64_t lo = n * part / parts / align * align;
    const int64_t hi = part + 1 == parts ? n : n * (part + 1) / parts / align * align;
    if (lo < hi) body(part, lo, hi);
  });
}

// Runs body(lo, hi) over [0, n) in ranges, one per part of the pool when `parallel`, else one range.
template <typename Body>
void over_ranges(int64_t n, bool parallel, Body body, int64_t align = 1) {
  over_parts(n, parts_for(parallel), [&](int, int64_t lo, int64_t hi) { body(lo, hi); }, align);
}

}  // namespace locomlx_kernels
