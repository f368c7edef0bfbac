// What each rank holds (src/parallel/shard.hpp): contiguous blocks that cover
// every head, group, expert, shared row and vocabulary row exactly once, and
// clear errors for rank counts the model cannot be split by.
#include <gtest/gtest.h>

#include <string>

#include "core/error.hpp"
#include "parallel/shard.hpp"

namespace megamoe {
namespace {

ModelConfig config_of(int64_t heads, int64_t groups, int64_t experts, int64_t shared_width, int64_t vocab) {
  ModelConfig c;
  c.num_heads = heads;
  c.o_groups = groups;
  c.n_routed_experts = experts;
  c.n_shared_experts = 1;
  c.moe_intermediate_size = shared_width;
  c.vocab_size = vocab;
  return c;
}

TEST(ShardRange, BlocksCoverEverythingOnceWithTheRemainderFirst) {
  for (int64_t total : {1, 7, 128, 129531}) {
    for (int64_t size : {1, 2, 3, 8}) {
      if (total < size) continue;
      int64_t next = 0;
      for (int64_t r = 0; r < size; ++r) {
        const IndexRange range = shard_range(total, {r, size});
        EXPECT_EQ(range.begin, next);
        EXPECT_GE(range.size(), total / size);
        EXPECT_LE(range.size(), max_shard_size(total, size));
        next = range.end;
      }
      EXPECT_EQ(next, total);
    }
  }
  EXPECT_EQ(shard_range(200, {0, 3}).size(), 67);
  EXPECT_EQ(shard_range(200, {2, 3}).size(), 66);
}

TEST(ShardLayout, V4FlashOnTwoAndEightRanks) {
  const ModelConfig flash = config_of(64, 8, 256, 2048, 129280);
  const ShardLayout two = shard_layout(flash, {1, 2});
  EXPECT_EQ(two.heads.begin, 32);
  EXPECT_EQ(two.heads.size(), 32);
  EXPECT_EQ(two.groups.begin, 4);
  EXPECT_EQ(two.experts.begin, 128);
  EXPECT_EQ(two.shared.size(), 1024);
  EXPECT_EQ(two.vocab.begin, 64640);
  const ShardLayout eight = shard_layout(flash, {7, 8});
  EXPECT_EQ(eight.heads.size(), 8);
  EXPECT_EQ(eight.groups.size(), 1);
  EXPECT_EQ(eight.experts.size(), 32);
  EXPECT_EQ(eight.vocab.size(), 16160);
}

void expect_error(const ModelConfig& c, ShardSpec shard, const std::string& words) {
  try {
    shard_layout(c, shard);
    FAIL() << "no error for rank " << shard.rank << " of " << shard.size;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

TEST(ShardLayout, CountsThatDoNotDivideAreClearErrors) {
  expect_error(config_of(4, 2, 8, 32, 128), {0, 3}, "num_attention_heads = 4 is not a multiple of 3");
  expect_error(config_of(4, 2, 8, 32, 128), {0, 4}, "o_groups = 2 is not a multiple of 4");
  expect_error(config_of(4, 4, 6, 32, 128), {0, 4}, "n_routed_experts = 6 is not a multiple of 4");
  expect_error(config_of(4, 4, 8, 30, 128), {0, 4}, "n_shared_experts * moe_intermediate_size = 30");
  expect_error(config_of(4, 4, 8, 32, 3), {0, 4}, "vocab_size 3 is smaller than the rank count");
  expect_error(config_of(4, 4, 8, 32, 128), {0, 0}, "the rank count must be >= 1");
  expect_error(config_of(4, 4, 8, 32, 128), {2, 2}, "rank 2 is outside [0, 2)");
}

}  // namespace
}  // namespace megamoe
