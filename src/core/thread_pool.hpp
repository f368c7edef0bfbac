// A small fixed-size thread pool with one primitive: parallel_for over [0, n).
// The CPU backend uses it for its row loops; results never depend on the
// number of threads (each index is processed by exactly one thread).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace megamoe {

class ThreadPool {
 public:
  // threads == 0 picks std::thread::hardware_concurrency().
  explicit ThreadPool(size_t threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t size() const { return workers_.size() + 1; }

  // Calls fn(begin, end) on disjoint chunks covering [0, n); blocks until done.
  // The first exception thrown by fn is rethrown here. Calls from several
  // threads are serialised; fn must not call parallel_for itself.
  void parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn, size_t min_chunk = 1);

  // The process-wide pool (sized by MEGAMOE_THREADS if set, else all cores).
  static ThreadPool& global();

 private:
  void worker_loop();
  // Claims and runs chunks of the current job until none is left; called and
  // returns with mutex_ held.
  void run_chunks(std::unique_lock<std::mutex>& lock);

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one parallel_for at a time
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(size_t, size_t)>* job_ = nullptr;
  size_t job_n_ = 0;
  size_t chunk_ = 0;
  size_t next_ = 0;
  size_t active_ = 0;
  size_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace megamoe
