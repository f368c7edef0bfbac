#include "server/engine.hpp"

#include "core/error.hpp"
#include "model/deepseek_v4/model.hpp"

namespace megamoe::server {
namespace {

class ModelSequence : public EngineSequence {
 public:
  explicit ModelSequence(dsv4::SequenceState s) : state(std::move(s)) {}
  dsv4::SequenceState state;
};

class ModelEngine : public StepEngine {
 public:
  ModelEngine(const dsv4::Model& model, int64_t slots, int64_t max_context)
      : model_(model), slots_(slots), max_context_(max_context) {}
  int64_t vocab_size() const override { return model_.config().vocab_size; }
  int64_t max_context() const override { return max_context_; }
  int64_t slots() const override { return slots_; }
  std::unique_ptr<EngineSequence> new_sequence() override {
    return std::make_unique<ModelSequence>(model_.new_sequence());
  }
  std::vector<std::vector<float>> step(std::span<const StepInput> inputs) override {
    std::vector<dsv4::SequenceInput> batch;
    batch.reserve(inputs.size());
    bool decode_only = true;
    for (const StepInput& in : inputs) {
      auto* seq = dynamic_cast<ModelSequence*>(in.sequence);
      MEGAMOE_CHECK(seq != nullptr, "engine step: a sequence of another engine");
      batch.push_back(dsv4::SequenceInput{in.ids, &seq->state});
      decode_only = decode_only && in.ids.size() == 1;
    }
    if (decode_only && model_.decode_bucket(static_cast<int64_t>(inputs.size())) > 0) {
      // All decodes: the recorded step of the batch's bucket (CUDA graph), with
      // the logits read back because the scheduler samples on the host.
      std::vector<dsv4::DecodeInput> decode;
      for (const dsv4::SequenceInput& in : batch) decode.push_back({in.ids[0], in.state, {}});
      std::vector<std::vector<float>> logits;
      dsv4::DecodeOptions options;
      options.logits = &logits;
      model_.decode(decode, options);
      return logits;
    }
    dsv4::ForwardOptions options;
    options.last_logits_only = true;
    return model_.forward_batch(batch, options);
  }

 private:
  const dsv4::Model& model_;
  int64_t slots_, max_context_;
};

}  // namespace

std::unique_ptr<StepEngine> make_model_engine(const dsv4::Model& model, int64_t slots, int64_t max_context) {
  return std::make_unique<ModelEngine>(model, slots, max_context);
}

}  // namespace megamoe::server
