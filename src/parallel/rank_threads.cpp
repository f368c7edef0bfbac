#include "parallel/rank_threads.hpp"

#include "core/error.hpp"

namespace megamoe {

RankThreads::RankThreads(int64_t ranks, std::function<void()> on_error) : on_error_(std::move(on_error)) {
  MEGAMOE_CHECK(ranks >= 1, "rank threads: the rank count must be >= 1, got ", ranks);
  for (int64_t r = 0; r < ranks; ++r) workers_.emplace_back([this, r] { worker_loop(r); });
}

RankThreads::~RankThreads() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void RankThreads::run(const std::function<void(int64_t)>& body) {
  std::lock_guard<std::mutex> run_lock(run_mutex_);
  std::unique_lock<std::mutex> lock(mutex_);
  body_ = &body;
  pending_ = size();
  error_ = nullptr;
  ++generation_;
  wake_.notify_all();
  done_.wait(lock, [this] { return pending_ == 0; });
  body_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

void RankThreads::worker_loop(int64_t rank) {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    const auto* body = body_;
    lock.unlock();
    std::exception_ptr failure;
    try {
      (*body)(rank);
    } catch (...) {
      failure = std::current_exception();
    }
    bool first_failure = false;
    lock.lock();
    if (failure && !error_) {
      error_ = failure;
      first_failure = true;
    }
    if (first_failure && on_error_) {
      lock.unlock();  // the hook may wake ranks that then need the lock
      on_error_();
      lock.lock();
    }
    if (--pending_ == 0) done_.notify_all();
  }
}

}  // namespace megamoe
