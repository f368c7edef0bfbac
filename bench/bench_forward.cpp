// `megamoe bench-forward`: a first wall-clock timing of the whole model
// forward on a checkpoint (the decode-graph issue builds the full `bench
// decode|prefill` group on top): prefill of P tokens, then D one-token decode
// steps, for B sequences at once. Times are host wall clock around complete
// forwards (each ends with the logits' download, which waits for the GPU);
// median of the repeats. Prints ms, tokens/s and, for decode, ms per layer.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/command.hpp"
#include "model/deepseek_v4/model.hpp"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int run_bench_forward(int argc, char** argv) {
  CLI::App app{"time prefill and decode of the whole model", argv[0]};
  std::string model_dir, device = "cuda";
  int64_t prefill = 1024, decode = 16, batch = 1, repeats = 3;
  app.add_option("--model", model_dir, "checkpoint directory")->required();
  app.add_option("--device", device, "cpu or cuda");
  app.add_option("--prefill", prefill, "prompt tokens per sequence")->check(CLI::PositiveNumber);
  app.add_option("--decode", decode, "decode steps")->check(CLI::NonNegativeNumber);
  app.add_option("--batch", batch, "sequences run together")->check(CLI::Range(1, 256));
  app.add_option("--repeats", repeats, "repetitions of the prefill (median)")->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);

  megamoe::dsv4::ModelOptions options;
  options.device = megamoe::parse_device_kind(device);
  options.backend.max_sequences = batch;
  options.backend.max_context = prefill + decode + 1;
  options.backend.max_step_rows = std::max<int64_t>(prefill * batch, batch);
  options.backend.progress = true;
  const auto t0 = std::chrono::steady_clock::now();
  const auto model = megamoe::dsv4::Model::load(model_dir, options);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto& cfg = model->config();
  std::printf("%s, %s, %lld layers; load %.1f s\n", model_dir.c_str(), model->backend().describe().c_str(),
              static_cast<long long>(cfg.num_layers), load_s);

  std::mt19937 rng(1);
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(batch));
  for (auto& p : prompts)
    for (int64_t i = 0; i < prefill; ++i) p.push_back(static_cast<int32_t>(rng() % cfg.vocab_size));
  megamoe::dsv4::ForwardOptions last;
  last.last_logits_only = true;
  std::vector<double> prefill_ms, decode_ms;
  for (int64_t r = 0; r < repeats; ++r) {
    std::vector<megamoe::dsv4::SequenceState> states;
    for (int64_t b = 0; b < batch; ++b) states.push_back(model->new_sequence());
    std::vector<megamoe::dsv4::SequenceInput> inputs;
    for (int64_t b = 0; b < batch; ++b) inputs.push_back({prompts[b], &states[b]});
    auto t = std::chrono::steady_clock::now();
    model->forward_batch(inputs, last);
    prefill_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count());
    if (r + 1 < repeats) continue;
    std::vector<int32_t> next(static_cast<size_t>(batch), 1);
    for (int64_t s = 0; s < decode; ++s) {
      for (int64_t b = 0; b < batch; ++b) inputs[b].ids = std::span<const int32_t>(&next[b], 1);
      t = std::chrono::steady_clock::now();
      model->forward_batch(inputs, last);
      decode_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count());
    }
  }
  const double p = median(prefill_ms), d = median(decode_ms);
  std::printf("prefill  batch %lld x %lld tokens: %.2f ms (%.0f tokens/s), median of %lld\n",
              static_cast<long long>(batch), static_cast<long long>(prefill), p, 1e3 * prefill * batch / p,
              static_cast<long long>(repeats));
  if (decode > 0)
    std::printf("decode   batch %lld at context %lld: %.3f ms/step (%.1f tokens/s), %.1f us/layer, median of %lld\n",
                static_cast<long long>(batch), static_cast<long long>(prefill), d, 1e3 * batch / d,
                1e3 * d / static_cast<double>(cfg.num_layers), static_cast<long long>(decode));
  return 0;
}

const megamoe::cli::Registration kBenchForward{"bench-forward", "time prefill and decode of the whole model",
                                               run_bench_forward};

}  // namespace
