// The CPU backend: every op of backend.hpp in plain fp32 on host memory, the
// reference math of src/backend/cpu/dsv4 and the MoE reference op. It is the
// oracle of every GPU test and matches transformers' fp64 goldens; with
// BackendOptions::emulate_gpu_moe_bf16 it rounds where the GPU's FP4 MoE op
// rounds, so the CUDA forward can be held to a tight tolerance. W4A4
// (BackendOptions::moe_activations) runs the MoE reference op with NVFP4
// activations and the checkpoint's input_scale. Sharded
// (BackendOptions::shard), it holds one rank's part and its collectives run
// over a ThreadCommunicator, so CI tests the multi-GPU logic.
#pragma once

#include <memory>

#include "backend/backend.hpp"
#include "backend/cpu/dsv4/rope.hpp"
#include "backend/cpu/dsv4/state.hpp"
#include "backend/cpu/dsv4/weights.hpp"
#include "backend/cpu/load.hpp"

namespace megamoe::cpu {

// One sequence's state: exactly the cache of dsv4-architecture.md §9.1.
class CpuCache : public SequenceCache {
 public:
  std::vector<dsv4::LayerState> layers;
};

class CpuBackend : public Backend {
 public:
  CpuBackend(const Checkpoint& checkpoint, const BackendOptions& options);

  DeviceKind kind() const override { return DeviceKind::kCpu; }
  std::string describe() const override { return "cpu (fp32 reference)"; }
  const ModelConfig& config() const override { return config_; }
  const BackendOptions& options() const override { return options_; }
  const dsv4::ModelWeights& weights() const { return weights_; }

  DeviceTensor empty(DType dtype, Shape shape) override;
  DeviceTensor upload_ids(std::span<const int32_t> ids) override;
  DeviceTensor upload(std::span<const float> values, Shape shape) override;
  std::vector<float> download(const DeviceTensor& t) override;
  std::vector<int32_t> download_ids(const DeviceTensor& t) override;

  std::unique_ptr<SequenceCache> new_cache() override;
  std::unique_ptr<StepPlan> plan(std::vector<StepSequence> sequences) override;

  void embed(const DeviceTensor& ids, DeviceTensor& streams) override;
  void hc_pre(int64_t layer, HcSite site, const DeviceTensor& streams, DeviceTensor& u, DeviceTensor& mix) override;
  void hc_post(DeviceTensor& streams, const DeviceTensor& y, const DeviceTensor& mix) override;
  void hc_head(const DeviceTensor& streams, std::span<const int64_t> rows, DeviceTensor& h) override;
  void linear(LinearKey w, const DeviceTensor& x, DeviceTensor& y) override;
  void rms_norm(DeviceTensor& x, int64_t width, NormKey weight) override;
  void rope(const StepPlan& step, DeviceTensor& x, int64_t heads, RopeTableKind table, bool inverse) override;
  void compressor(const StepPlan& step, int64_t layer, CompressorKind which, const DeviceTensor& kv,
                  const DeviceTensor& gate) override;
  void indexer_topk(const StepPlan& step, int64_t layer, const DeviceTensor& q, const DeviceTensor& head_w,
                    DeviceTensor& selected) override;
  void round_kv(DeviceTensor& kv) override;
  void attention(const StepPlan& step, int64_t layer, const DeviceTensor& q, const DeviceTensor& kv,
                 const DeviceTensor& selected, DeviceTensor& out) override;
  void moe(int64_t layer, const DeviceTensor& x, const DeviceTensor& ids, DeviceTensor& y) override;
  std::vector<int32_t> sample(const DeviceTensor& logits, std::span<const SampleRequest> rows) override;
  void all_reduce_sum(DeviceTensor& x) override;
  void all_gather_columns(const DeviceTensor& part, DeviceTensor& full) override;

 private:
  const Tensor& linear_weight(LinearKey key) const;
  const dsv4::CompressorWeights& compressor_weights(int64_t layer, CompressorKind which) const;

  ModelConfig config_;
  BackendOptions options_;
  ShardLayout shard_;  // this rank's heads, groups, experts, shared slice, vocabulary rows
  dsv4::ModelWeights weights_;
  std::vector<ExpertInputScales> input_scales_;  // per layer, W4A4 only
  dsv4::RopeTable rope_main_, rope_compress_;
};

}  // namespace megamoe::cpu
