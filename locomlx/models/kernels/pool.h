// The thread pool the CPU kernels split their rows over (one per process, shared by every kernel).
//
// Workers spin briefly between calls (a decode step makes ~200 of them, microseconds apart) and then
// sleep, so they never hold a core while other work runs; a call's parts go to whichever thread is free.

#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <sched.h>
#include <thread>
#include <vector>

namespace locomlx_kernels {

class Pool {
 public:
  explicit Pool(int threads) {
    for (int i = 1; i < threads; ++i) {
      // A worker starts from generation 0, not from whatever it reads once scheduled: a call made
      // before the thread first runs must not be mistaken for one it has already seen.
      workers_.emplace_back([this] { work(0); });
    }
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // How many parts to split a large call into: several per thread, as parts are taken by whichever thread is
  // free. (qgemv's decode calls, some 20 microseconds each, keep one part per thread: finer measured no faster.)
  int parts() const { return workers_.empty() ? 1 : size() * kPartsPerThread; }

  // Runs task(part) for every part in [0, parts) and returns when all are done. The caller takes parts as well
  // as the workers, and each thread takes the next part left: a worker that starts late (its core still held by
  // the BLAS's threads, which spin for a while after each matrix product) leaves its share to the others
  // instead of keeping the caller waiting for it (a 512-token prefill's kernels waited ~90 ms for it on 2 cores).
  void run(int parts, const std::function<void(int)>& task) {
    if (workers_.empty() || parts <= 1) {
      for (int part = 0; part < parts; ++part) task(part);
      return;
    }
    std::lock_guard<std::mutex> one_call_at_a_time(calling_);  // kernels evaluated on two streams at once
    task_ = &task;
    parts_.store(parts, std::memory_order_relaxed);
    uint64_t call;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // The call's parts are published before the workers are told of it, so a worker that wakes finds them.
      call = generation_.load() + 1;
      next_.store(call << 32, std::memory_order_release);
      generation_.store(call, std::memory_order_release);
    }
    wake_.notify_all();
    take(call);
    while (active_.load(std::memory_order_acquire) > 0) {
      pause();
    }
  }

 private:
  static void pause() {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }

  // Runs parts of call `call` while any is left. `next_` holds the call (high 32 bits) and its next part, so a
  // worker that wakes after its call is over finds another call's number there and takes nothing.
  void take(uint64_t call) {
    const uint64_t tag = call & 0xffffffffu;
    uint64_t state = next_.load(std::memory_order_acquire);
    while ((state >> 32) == tag && static_cast<int>(state & 0xffffffffu) < parts_.load(std::memory_order_relaxed)) {
      if (next_.compare_exchange_weak(state, state + 1, std::memory_order_acq_rel)) {
        (*task_)(static_cast<int>(state & 0xffffffffu));
        state = next_.load(std::memory_order_acquire);
      }
    }
  }

  void work(uint64_t seen) {
    while (true) {
      // Spin for a while (the next call of a decode step is microseconds away), then sleep.
      int spins = 0;
      while (generation_.load(std::memory_order_acquire) == seen && spins < kSpins) {
        pause();
        ++spins;
      }
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load() != seen; });
      }
      seen = generation_.load();
      if (stop_) return;
      // Counted before taking a part, so the caller cannot return while this thread runs one.
      active_.fetch_add(1, std::memory_order_acq_rel);
      take(seen);
      active_.fetch_sub(1, std::memory_order_release);
    }
  }

  static constexpr int kSpins = 20000;  // roughly 100-500 microseconds of pause instructions
  static constexpr int kPartsPerThread = 8;
  std::vector<std::thread> workers_;
  std::mutex mutex_, calling_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<uint64_t> next_{0};
  std::atomic<int> active_{0};
  std::atomic<int> parts_{0};
  const std::function<void(int)>* task_ = nullptr;
  bool stop_ = false;
};

inline int default_threads() {
  if (const char* env = std::getenv("LOCOMLX_KERNEL_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
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
