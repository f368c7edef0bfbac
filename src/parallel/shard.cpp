#include "parallel/shard.hpp"

#include "core/error.hpp"

namespace megamoe {

IndexRange shard_range(int64_t total, const ShardSpec& shard) {
  const int64_t base = total / shard.size, extra = total % shard.size;
  const int64_t begin = shard.rank * base + (shard.rank < extra ? shard.rank : extra);
  return {begin, begin + base + (shard.rank < extra ? 1 : 0)};
}

int64_t max_shard_size(int64_t total, int64_t size) { return (total + size - 1) / size; }

namespace {

// The even split of a field that must divide by the rank count.
IndexRange even_range(int64_t total, const ShardSpec& shard, const char* field) {
  MEGAMOE_CHECK(total % shard.size == 0, "sharding over ", shard.size, " ranks: config ", field, " = ", total,
                " is not a multiple of ", shard.size, " (choose a rank count that divides it)");
  return shard_range(total, shard);
}

}  // namespace

ShardLayout shard_layout(const ModelConfig& config, const ShardSpec& shard) {
  MEGAMOE_CHECK(shard.size >= 1, "sharding: the rank count must be >= 1, got ", shard.size);
  MEGAMOE_CHECK(shard.rank >= 0 && shard.rank < shard.size, "sharding: rank ", shard.rank, " is outside [0, ",
                shard.size, ")");
  ShardLayout layout;
  layout.shard = shard;
  layout.heads = even_range(config.num_heads, shard, "num_attention_heads");
  // A rank's heads must be whole output-projection groups: o_a mixes the heads of one group.
  layout.groups = even_range(config.o_groups, shard, "o_groups");
  layout.experts = even_range(config.n_routed_experts, shard, "n_routed_experts");
  layout.shared = even_range(config.n_shared_experts * config.moe_intermediate_size, shard,
                             "n_shared_experts * moe_intermediate_size");
  MEGAMOE_CHECK(config.vocab_size >= shard.size, "sharding over ", shard.size, " ranks: vocab_size ",
                config.vocab_size, " is smaller than the rank count");
  layout.vocab = shard_range(config.vocab_size, shard);  // a remainder is fine: the gather pads
  return layout;
}

}  // namespace megamoe
