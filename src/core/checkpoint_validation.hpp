// The one validation of a DeepSeek-V4 checkpoint against its config.json,
// shared by the model loader (make_backend runs it before any backend reads a
// weight) and `megamoe inspect` (which prints every problem):
//   - every tensor the forward reads is present with the shape the config implies
//     and a known storage format (companion scales with their dtypes and shapes);
//   - every routed expert weight of every layer resolves with the config's shape;
//   - hash-routing tables hold expert ids in [0, n_routed_experts);
//   - non-finite values: every non-expert tensor and every scale (expert scales
//     included) is scanned for NaN/Inf. The routed experts' own weights are not
//     scanned (FP4 codes cannot be NaN; they are most of the bytes); the sampler
//     refuses non-finite logits, which catches the rest at generation time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/checkpoint.hpp"

namespace megamoe {

struct CheckpointReport {
  std::vector<std::string> problems;  // empty: valid
  int64_t finite_tensors = 0;         // tensors scanned for NaN/Inf
  uint64_t finite_bytes = 0;          // and their bytes
  double finite_seconds = 0.0;        // time of that scan
};

struct ValidationOptions {
  bool check_finite = true;
};

CheckpointReport validate_checkpoint(const Checkpoint& checkpoint, const ValidationOptions& options = {});

// validate_checkpoint; throws megamoe::Error with the first problem (and how many
// more there are) when there is any.
void require_valid_checkpoint(const Checkpoint& checkpoint, const ValidationOptions& options = {});

// Index of the first NaN or Inf element of a float tensor (F32, F16, BF16,
// F8_E4M3, F8_E8M0), or -1 when all are finite or the dtype has no such values.
int64_t first_non_finite(const TensorView& view);

}  // namespace megamoe
