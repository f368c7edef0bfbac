// How the model is split over ranks (docs/parallel.md): attention by heads
// (with the output-projection groups that go with them), routed experts in
// contiguous blocks, the shared expert by its intermediate dimension, lm_head
// by vocabulary rows. Everything else is replicated on every rank.
#pragma once

#include <cstdint>

#include "core/model_config.hpp"

namespace megamoe {

// Which rank of how many this backend is; {0, 1} is the whole model.
struct ShardSpec {
  int64_t rank = 0;
  int64_t size = 1;
  bool sharded() const { return size > 1; }
};

// A half-open index range [begin, end).
struct IndexRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool contains(int64_t i) const { return i >= begin && i < end; }
};

// Block `rank` of `total` items split into `size` contiguous blocks, the first
// total % size blocks one item larger (used where a remainder is allowed).
IndexRange shard_range(int64_t total, const ShardSpec& shard);
// The largest block of shard_range(total, {*, size}): the padded width of an all-gather.
int64_t max_shard_size(int64_t total, int64_t size);

// What one rank holds, in the model's global indices.
struct ShardLayout {
  ShardSpec shard;
  IndexRange heads;   // attention heads (q_b rows / H_local d_h, sinks, attention)
  IndexRange groups;  // output-projection groups (o_a rows / r_o, o_b columns / r_o)
  IndexRange experts;  // routed experts
  IndexRange shared;   // shared-expert intermediate rows (gate/up rows, down columns)
  IndexRange vocab;    // lm_head rows = logit columns
};

// The layout of `shard` for `config`; throws a message naming the config
// field and the rank count when the model cannot be split that way.
ShardLayout shard_layout(const ModelConfig& config, const ShardSpec& shard);

}  // namespace megamoe
