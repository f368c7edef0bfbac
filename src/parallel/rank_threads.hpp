// One persistent worker thread per rank: a sharded model runs each step's
// body on every rank at once (the ranks meet in collectives, so they must run
// concurrently), and a CUDA rank keeps its device bound to its own thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace megamoe {

class RankThreads {
 public:
  // on_error runs once per failed run, as soon as the first rank throws
  // (e.g. aborting the communicator, so the other ranks leave their collectives).
  RankThreads(int64_t ranks, std::function<void()> on_error);
  ~RankThreads();
  RankThreads(const RankThreads&) = delete;
  RankThreads& operator=(const RankThreads&) = delete;

  int64_t size() const { return static_cast<int64_t>(workers_.size()); }
  // Runs body(r) on worker r for every rank at once and waits for all of them;
  // rethrows the first exception thrown (in time: the cause, not a later abort).
  void run(const std::function<void(int64_t rank)>& body);

 private:
  void worker_loop(int64_t rank);

  std::function<void()> on_error_;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one run at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* body_ = nullptr;
  uint64_t generation_ = 0;
  int64_t pending_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace megamoe
