// The one place where the server calls into the engine: a batched step over
// sequences that each continue their own state, returning each sequence's
// last-token logits. The scheduler sees only this interface, so the model's
// forward_batch can be swapped for a device-side decode path (sampled ids)
// without touching the scheduling, and tests can script the tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace megamoe::dsv4 {
class Model;
}

namespace megamoe::server {

// One sequence's state (a backend state slot while it lives).
class EngineSequence {
 public:
  virtual ~EngineSequence() = default;
};

struct StepInput {
  std::span<const int32_t> ids;  // >= 1 new tokens continuing the sequence
  EngineSequence* sequence = nullptr;
};

class StepEngine {
 public:
  virtual ~StepEngine() = default;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t max_context() const = 0;  // tokens per sequence (prompt + generated)
  virtual int64_t slots() const = 0;        // sequences alive at once
  // A fresh sequence; throws when every slot is taken.
  virtual std::unique_ptr<EngineSequence> new_sequence() = 0;
  // One batched step; returns the logits [vocab_size] of each input's last token.
  virtual std::vector<std::vector<float>> step(std::span<const StepInput> inputs) = 0;
};

// A loaded DeepSeek-V4 model (it must outlive the engine): steps where every
// sequence decodes one token replay the model's recorded decode step where
// the backend records (cuda); every other step is forward_batch.
// max_context: the limit the model's backend was configured with (resolved).
std::unique_ptr<StepEngine> make_model_engine(const dsv4::Model& model, int64_t slots, int64_t max_context);

}  // namespace megamoe::server
