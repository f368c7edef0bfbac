// The CPU ranks' collectives (src/parallel/thread_communicator.hpp) and the
// rank threads that drive them: sums in rank order, bit-identical on every
// rank; gathers in rank order; an abort wakes every waiting rank.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "core/error.hpp"
#include "parallel/rank_threads.hpp"
#include "parallel/thread_communicator.hpp"

namespace megamoe {
namespace {

std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1e3f, 1e3f);  // wide range: sums depend on their order
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

class Collectives : public ::testing::TestWithParam<int64_t> {};

TEST_P(Collectives, AllReduceSumsInRankOrderBitIdenticalOnEveryRank) {
  const int64_t ranks = GetParam();
  constexpr size_t kCount = 1000;
  const auto comms = make_thread_communicators(ranks);
  std::vector<std::vector<float>> data;
  for (int64_t r = 0; r < ranks; ++r) data.push_back(random_values(kCount, 7 + static_cast<uint32_t>(r)));
  std::vector<float> expected(kCount);
  for (size_t i = 0; i < kCount; ++i) {
    float acc = data[0][i];
    for (int64_t r = 1; r < ranks; ++r) acc += data[static_cast<size_t>(r)][i];
    expected[i] = acc;
  }
  RankThreads threads(ranks, [&] { comms.front()->abort(); });
  for (int round = 0; round < 3; ++round) {  // back-to-back collectives reuse the group
    std::vector<std::vector<float>> work = data;
    threads.run([&](int64_t r) {
      comms[static_cast<size_t>(r)]->all_reduce_sum(work[static_cast<size_t>(r)].data(), kCount, nullptr);
    });
    for (int64_t r = 0; r < ranks; ++r)
      EXPECT_EQ(std::memcmp(work[static_cast<size_t>(r)].data(), expected.data(), kCount * 4), 0) << "rank " << r;
  }
}

TEST_P(Collectives, AllGatherConcatenatesInRankOrder) {
  const int64_t ranks = GetParam();
  constexpr size_t kCount = 37;
  const auto comms = make_thread_communicators(ranks);
  std::vector<std::vector<float>> recv(static_cast<size_t>(ranks), std::vector<float>(ranks * kCount, -1.f));
  RankThreads threads(ranks, [&] { comms.front()->abort(); });
  threads.run([&](int64_t r) {
    const std::vector<float> send = random_values(kCount, 100 + static_cast<uint32_t>(r));
    comms[static_cast<size_t>(r)]->all_gather(send.data(), recv[static_cast<size_t>(r)].data(), kCount, nullptr);
  });
  for (int64_t r = 0; r < ranks; ++r) {
    for (int64_t k = 0; k < ranks; ++k) {
      const std::vector<float> part = random_values(kCount, 100 + static_cast<uint32_t>(k));
      EXPECT_EQ(std::memcmp(recv[static_cast<size_t>(r)].data() + k * kCount, part.data(), kCount * 4), 0)
          << "rank " << r << " part " << k;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, Collectives, ::testing::Values(1, 2, 3, 4, 8));

TEST(Collectives, AFailingRankAbortsTheOthersInsteadOfHanging) {
  constexpr int64_t kRanks = 3;
  const auto comms = make_thread_communicators(kRanks);
  RankThreads threads(kRanks, [&] { comms.front()->abort(); });
  std::atomic<int> aborted{0};
  try {
    threads.run([&](int64_t r) {
      if (r == 1) MEGAMOE_THROW("rank 1 failed on purpose");
      float x = 1.f;
      try {
        comms[static_cast<size_t>(r)]->all_reduce_sum(&x, 1, nullptr);
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("collective aborted"), std::string::npos) << e.what();
        ++aborted;
        throw;
      }
    });
    FAIL() << "the failing rank's error was not rethrown";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "rank 1 failed on purpose");  // the cause, not a later abort
  }
  EXPECT_EQ(aborted.load(), 2);
}

TEST(Collectives, BadRankCountsAreRefused) {
  EXPECT_THROW(make_thread_communicators(0), Error);
  EXPECT_THROW(RankThreads(0, nullptr), Error);
}

}  // namespace
}  // namespace megamoe
