// The thread pool the CPU kernels split their rows over (one per process, shared by every kernel).
//
// Workers spin briefly between calls (a decode step makes ~200 of them, microseconds apart) and then
// sleep, so they never hold a core while other work runs.

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
      workers_.emplace_back([this, i] { work(i, 0); });
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

  // Runs task(part) for part in [0, size()) and returns when all are done; the caller runs part 0.
  void run(const std::function<void(int)>& task) {
    if (workers_.empty()) {
      task(0);
      return;
    }
    task_ = &task;
    pending_.store(static_cast<int>(workers_.size()));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    task(0);
    while (pending_.load(std::memory_order_acquire) > 0) {
      pause();
    }
  }

 private:
  static void pause() {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }

  void work(int part, uint64_t seen) {
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
      (*task_)(part);
      pending_.fetch_sub(1, std::memory_order_release);
    }
  }

  static constexpr int kSpins = 20000;  // roughly 100-500 microseconds of pause instructions
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
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

}  // namespace locomlx_kernels
