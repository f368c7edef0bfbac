#include <atomic>
#include <vector>

#include <gtest/gtest.h>

#include "core/thread_pool.hpp"

namespace megamoe {
namespace {

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  ThreadPool pool(4);
  for (size_t n : {0u, 1u, 7u, 1000u}) {
    std::vector<std::atomic<int>> hits(n);
    pool.parallel_for(n, [&](size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) hits[i]++;
    });
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << "index " << i << " of " << n;
  }
}

TEST(ThreadPool, RethrowsTheWorkersException) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(100, [](size_t begin, size_t) {
    if (begin > 50) throw std::runtime_error("boom");
  }), std::runtime_error);
  // The pool stays usable after an exception.
  std::atomic<size_t> total{0};
  pool.parallel_for(10, [&](size_t begin, size_t end) { total += end - begin; });
  EXPECT_EQ(total.load(), 10u);
}

}  // namespace
}  // namespace megamoe
