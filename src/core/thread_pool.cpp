#include "core/thread_pool.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>

namespace megamoe {

ThreadPool::ThreadPool(size_t threads) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  for (size_t i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& worker : workers_) worker.join();
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool([] {
    const char* env = std::getenv("MEGAMOE_THREADS");
    return env ? static_cast<size_t>(std::max(1L, std::strtol(env, nullptr, 10))) : size_t{0};
  }());
  return pool;
}

void ThreadPool::parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn, size_t min_chunk) {
  if (n == 0) return;
  const size_t threads = size();
  if (threads == 1 || n <= min_chunk) {
    fn(0, n);
    return;
  }
  // Several chunks per thread balance uneven work; min_chunk bounds overhead.
  const size_t chunk = std::max(min_chunk, (n + threads * 4 - 1) / (threads * 4));
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  std::unique_lock<std::mutex> lock(mutex_);
  job_ = &fn;
  job_n_ = n;
  chunk_ = chunk;
  next_ = 0;
  active_ = workers_.size() + 1;
  error_ = nullptr;
  ++generation_;
  wake_.notify_all();
  run_chunks(lock);  // the calling thread works too
  --active_;
  done_.wait(lock, [this] { return active_ == 0; });
  job_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

void ThreadPool::run_chunks(std::unique_lock<std::mutex>& lock) {
  const auto* fn = job_;
  while (next_ < job_n_) {
    const size_t begin = next_;
    const size_t end = std::min(job_n_, begin + chunk_);
    next_ = end;
    lock.unlock();
    try {
      (*fn)(begin, end);
      lock.lock();
    } catch (...) {
      lock.lock();
      if (!error_) error_ = std::current_exception();
      next_ = job_n_;  // the other threads stop claiming chunks
    }
  }
}

void ThreadPool::worker_loop() {
  size_t seen = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    run_chunks(lock);
    if (--active_ == 0) done_.notify_all();
  }
}

}  // namespace megamoe
