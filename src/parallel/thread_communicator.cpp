#include "parallel/thread_communicator.hpp"

#include <condition_variable>
#include <cstring>
#include <mutex>

#include "core/error.hpp"

namespace megamoe {
namespace {

// State shared by the ranks: one published buffer per rank and a barrier.
class ThreadGroup {
 public:
  explicit ThreadGroup(int64_t ranks) : ranks_(ranks), published_(static_cast<size_t>(ranks), nullptr) {}
  int64_t ranks() const { return ranks_; }

  // Publishes rank's buffer, then waits for every rank to publish theirs.
  void publish(int64_t rank, const float* data) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      published_[static_cast<size_t>(rank)] = data;
    }
    barrier();
  }
  const float* buffer(int64_t rank) const { return published_[static_cast<size_t>(rank)]; }

  // Blocks until all ranks arrive; throws when the group was aborted.
  void barrier() {
    std::unique_lock<std::mutex> lock(mutex_);
    MEGAMOE_CHECK(!aborted_, "collective aborted: another rank failed");
    const uint64_t generation = generation_;
    if (++arrived_ == ranks_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != generation || aborted_; });
    MEGAMOE_CHECK(generation_ != generation, "collective aborted: another rank failed");
  }

  void abort() {
    std::lock_guard<std::mutex> lock(mutex_);
    aborted_ = true;
    cv_.notify_all();
  }

 private:
  const int64_t ranks_;
  std::vector<const float*> published_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int64_t arrived_ = 0;
  uint64_t generation_ = 0;
  bool aborted_ = false;
};

class ThreadCommunicator : public Communicator {
 public:
  ThreadCommunicator(std::shared_ptr<ThreadGroup> group, int64_t rank) : group_(std::move(group)), rank_(rank) {}
  int64_t rank() const override { return rank_; }
  int64_t size() const override { return group_->ranks(); }

  void all_reduce_sum(float* data, size_t count, void*) override {
    group_->publish(rank_, data);
    // Every rank adds in rank order, so all hold the same bits.
    std::vector<float> sum(group_->buffer(0), group_->buffer(0) + count);
    for (int64_t r = 1; r < size(); ++r) {
      const float* part = group_->buffer(r);
      for (size_t i = 0; i < count; ++i) sum[i] += part[i];
    }
    group_->barrier();  // nobody writes its buffer before everyone has read it
    std::memcpy(data, sum.data(), count * sizeof(float));
  }

  void all_gather(const float* send, float* recv, size_t count, void*) override {
    group_->publish(rank_, send);
    for (int64_t r = 0; r < size(); ++r) std::memcpy(recv + r * count, group_->buffer(r), count * sizeof(float));
    group_->barrier();  // the senders' buffers stay alive until everyone has copied
  }

  void abort() override { group_->abort(); }

 private:
  std::shared_ptr<ThreadGroup> group_;
  int64_t rank_;
};

}  // namespace

std::vector<std::shared_ptr<Communicator>> make_thread_communicators(int64_t ranks) {
  MEGAMOE_CHECK(ranks >= 1, "thread communicator: the rank count must be >= 1, got ", ranks);
  auto group = std::make_shared<ThreadGroup>(ranks);
  std::vector<std::shared_ptr<Communicator>> out;
  for (int64_t r = 0; r < ranks; ++r) out.push_back(std::make_shared<ThreadCommunicator>(group, r));
  return out;
}

}  // namespace megamoe
