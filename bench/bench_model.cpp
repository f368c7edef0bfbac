// `megamoe bench decode` and `megamoe bench prefill`: the whole model on the
// GPU at batch x context cases (docs/decode.md is the method and the budget).
//
// decode: B sequences at context C take one-token steps through
//   Model::decode (the recorded CUDA graph per batch bucket; --eager for the
//   launched path). Context is reached by moving each sequence's position to
//   C over zeroed state, so the kernels read exactly the bytes they would
//   after a real prefill of C tokens (timing only; values are not meaningful).
//   Median of --steps graph replays, host wall clock around each step (it
//   ends with the ids' read-back). Then --profile-steps eager steps with an
//   event at every stage boundary give the per-stage device time.
// prefill: one sequence, P tokens in chunks of --chunk rows, wall clock;
//   the breakdown from the same prefill run with events.
// Bytes per step: the checkpoint's stored tensors (bench/step_bytes.hpp);
// the floor is bytes / the HBM read bandwidth measured in this run. Figures
// for 43 (Flash) / 61 (Pro) layers are projections: head once plus the
// measured per-layer time times the full depth, and are labelled so.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "backend/cuda/hbm_read.hpp"
#include "bench/step_bytes.hpp"
#include "cli/command.hpp"
#include "cli/options.hpp"
#include "cli/rank_options.hpp"
#include "core/error.hpp"
#include "model/deepseek_v4/model.hpp"

namespace megamoe::bench {
namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

struct Common {
  std::string model_dir;
  int64_t full_layers = 0;  // projection depth; 0: 43 for Flash widths (D 4096), 61 for Pro (D 7168)
  double hbm_gb = 2.0;      // size of the bandwidth probe
  cli::RankArgs ranks;      // --devices N: the model split over N GPUs (docs/parallel.md)
};

void add_common(CLI::App& app, Common& c) {
  app.add_option("--model", c.model_dir, "checkpoint directory (e.g. `megamoe make-synthetic --preset flash`)")
      ->required();
  app.add_option("--full-layers", c.full_layers, "depth of the projected full model (0: 43 Flash / 61 Pro)");
  cli::add_rank_options(app, c.ranks);
}

int64_t full_depth(const Common& c, const ModelConfig& config) {
  if (c.full_layers > 0) return c.full_layers;
  return config.hidden_size >= 7168 ? 61 : 43;
}

std::unique_ptr<dsv4::Model> load(const Common& c, int64_t sequences, int64_t context, int64_t step_rows) {
  dsv4::ModelOptions options;
  options.device = DeviceKind::kCuda;
  options.backend.max_sequences = sequences;
  options.backend.max_context = context;
  options.backend.max_step_rows = step_rows;
  options.backend.progress = true;
  cli::apply_rank_args(c.ranks, "cuda", options);  // stage times (the comm stage too) are rank 0's
  const auto t = Clock::now();
  auto model = dsv4::Model::load(c.model_dir, options);
  std::printf("%s: %s, %lld layers, load %.1f s\n", c.model_dir.c_str(), model->backend().describe().c_str(),
              static_cast<long long>(model->config().num_layers), ms_since(t) / 1e3);
  return model;
}

void print_stages(const StageTimes& t, double scale, const char* what) {
  double sum = 0;
  for (double ms : t.ms) sum += ms;
  std::printf("    stages (%s, us/step):", what);
  for (int s = 0; s < kStageCount; ++s) std::printf(" %s %.1f (%.0f%%)", kStageNames[s], 1e3 * t.ms[s] * scale,
                                                    sum > 0 ? 100 * t.ms[s] / sum : 0.0);
  std::printf("\n");
}

// "64", "16K" (= 16384): sizes of cases, each a positive decimal (cli/options.hpp) with an optional K.
std::vector<int64_t> parse_sizes(const std::vector<std::string>& items, const char* what) {
  std::vector<int64_t> out;
  for (const std::string& item : items) {
    const bool kilo = !item.empty() && (item.back() == 'K' || item.back() == 'k');
    const std::string digits = kilo ? item.substr(0, item.size() - 1) : item;
    out.push_back(cli::parse_int_option(what, digits, 1, int64_t{1} << 30) * (kilo ? 1024 : 1));
  }
  return out;
}

// The step's time split into the head (its measured share of the stage
// events, run once) and the layers; the projection scales the layers to `depth`.
struct Projection {
  double layers_ms = 0, projected_ms = 0;
};

Projection project(double step_ms, const StageTimes& stages, int64_t layers, int64_t depth) {
  double sum = 0;
  for (double t : stages.ms) sum += t;
  const double head_share = sum > 0 ? stages.ms[static_cast<int>(Stage::kHead)] / sum : 0.0;
  Projection p;
  p.layers_ms = step_ms * (1 - head_share);
  p.projected_ms = step_ms * head_share + p.layers_ms * static_cast<double>(depth) / static_cast<double>(layers);
  return p;
}

int run_decode(int argc, char** argv) {
  CLI::App app{"time decode steps of the whole model (graph replay) at batch x context", argv[0]};
  Common common;
  add_common(app, common);
  std::vector<std::string> batches_text = {"1", "8", "32", "64", "128"}, contexts_text = {"1K", "16K", "64K"};
  int64_t steps = 20, profile_steps = 3;
  bool eager = false;
  app.add_option("--batches", batches_text, "sequences per step")->expected(1, 64);
  app.add_option("--contexts", contexts_text, "tokens already in each sequence (1K = 1024)")->expected(1, 64);
  app.add_option("--steps", steps, "timed steps per case (median)")->check(CLI::Range(1, 10000));
  app.add_option("--profile-steps", profile_steps, "eager steps with stage events per case (0: none)")
      ->check(CLI::Range(0, 1000));
  app.add_flag("--eager", eager, "time the launched (not recorded) step");
  CLI11_PARSE(app, argc, argv);
  const std::vector<int64_t> batches = parse_sizes(batches_text, "--batches");
  const std::vector<int64_t> contexts = parse_sizes(contexts_text, "--contexts");
  const int64_t max_batch = *std::max_element(batches.begin(), batches.end());
  const int64_t max_context = *std::max_element(contexts.begin(), contexts.end());
  const int64_t budget = steps + profile_steps + 2;  // positions a case advances

  const auto model = load(common, max_batch, max_context + budget, 0);
  const ModelConfig& cfg = model->config();
  const ModelBytes bytes = weight_bytes(*Checkpoint::open(common.model_dir));
  const double hbm = cuda::measure_hbm_read_tbps(size_t{2} << 30, 5);
  const int64_t depth = full_depth(common, cfg);
  std::printf("HBM read bandwidth (2 GiB streaming read, median of 5): %.3f TB/s\n", hbm);
  std::printf("decode (%s); bytes per step from the checkpoint's stored tensors + state read (fp32); floor = bytes / "
              "HBM read; full-depth figures are PROJECTIONS to %lld layers\n",
              eager ? "eager" : "graph replay", static_cast<long long>(depth));
  std::printf("%6s %7s %10s %9s %10s %11s %9s %7s %14s %12s\n", "batch", "context", "ms/step", "us/layer", "tokens/s",
              "bytes/step", "TB/s", "%floor", "proj ms/token", "proj tok/s");
  for (int64_t context : contexts) {
    for (int64_t batch : batches) {
      std::vector<dsv4::SequenceState> states;
      for (int64_t b = 0; b < batch; ++b) {
        states.push_back(model->new_sequence());
        states.back().position = context - 1;  // zeroed state stands in for a prefill (see the header)
      }
      std::vector<int32_t> ids(static_cast<size_t>(batch), 1);
      auto run_step = [&](bool graph) {
        std::vector<dsv4::DecodeInput> in;
        for (int64_t b = 0; b < batch; ++b) in.push_back({ids[static_cast<size_t>(b)], &states[b], {}});
        dsv4::DecodeOptions options;
        options.graph = graph;
        ids = model->decode(in, options);
      };
      run_step(!eager);  // records the bucket's graph (not timed)
      std::vector<double> ms;
      for (int64_t s = 0; s < steps; ++s) {
        const auto t = Clock::now();
        run_step(!eager);
        ms.push_back(ms_since(t));
      }
      StageTimes stages;
      for (int64_t s = 0; s < profile_steps; ++s) {
        model->backend().begin_profile();
        run_step(false);
        const StageTimes t = model->backend().end_profile();
        for (int i = 0; i < kStageCount; ++i) stages.ms[i] += t.ms[i] / static_cast<double>(profile_steps);
      }
      const double step_ms = median(ms);
      const StepBytes sb = step_bytes(bytes, cfg, batch, batch, context);
      const double tbps = sb.total() / (step_ms * 1e-3) / 1e12;
      const Projection p = project(step_ms, stages, cfg.num_layers, depth);
      std::printf("%6lld %7lld %10.3f %9.1f %10.1f %11s %9.3f %6.1f%% %14.3f %12.1f\n", static_cast<long long>(batch),
                  static_cast<long long>(context), step_ms, 1e3 * p.layers_ms / cfg.num_layers, 1e3 * batch / step_ms,
                  gb(sb.total()).c_str(), tbps, 100 * tbps / hbm, p.projected_ms, 1e3 * batch / p.projected_ms);
      if (profile_steps > 0) print_stages(stages, 1.0, "eager, events");
      std::fflush(stdout);
    }
  }
  return 0;
}

int run_prefill(int argc, char** argv) {
  CLI::App app{"time prefill of one sequence, in chunks", argv[0]};
  Common common;
  add_common(app, common);
  std::vector<std::string> lengths_text = {"1K", "8K", "32K"};
  int64_t chunk = 2048, repeats = 2;
  app.add_option("--tokens", lengths_text, "prompt lengths (1K = 1024)")->expected(1, 64);
  app.add_option("--chunk", chunk, "rows per prefill step")->check(CLI::Range(1, 1 << 20));
  app.add_option("--repeats", repeats, "runs per length (median)")->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);
  const std::vector<int64_t> lengths = parse_sizes(lengths_text, "--tokens");
  const int64_t longest = *std::max_element(lengths.begin(), lengths.end());
  const auto model = load(common, 1, longest + 1, chunk);
  const ModelConfig& cfg = model->config();
  const int64_t depth = full_depth(common, cfg);
  std::printf("prefill, chunks of %lld rows; full-depth figures are PROJECTIONS to %lld layers\n",
              static_cast<long long>(chunk), static_cast<long long>(depth));
  std::printf("%8s %10s %11s %13s %14s\n", "tokens", "ms", "tokens/s", "us/layer/tok", "proj tokens/s");
  std::mt19937 rng(1);
  for (int64_t n : lengths) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int32_t& id : ids) id = static_cast<int32_t>(rng() % cfg.vocab_size);
    dsv4::ForwardOptions last;
    last.last_logits_only = true;
    std::vector<double> ms;
    StageTimes stages;
    for (int64_t r = 0; r <= repeats; ++r) {  // the last run is profiled
      dsv4::SequenceState state = model->new_sequence();
      if (r == repeats) model->backend().begin_profile();
      const auto t = Clock::now();
      model->forward(ids, state, last);
      if (r < repeats) ms.push_back(ms_since(t));
      if (r == repeats) stages = model->backend().end_profile();
    }
    const double total = median(ms);
    const Projection p = project(total, stages, cfg.num_layers, depth);
    std::printf("%8lld %10.2f %11.0f %13.3f %14.0f\n", static_cast<long long>(n), total, 1e3 * n / total,
                1e3 * p.layers_ms / cfg.num_layers / n, 1e3 * n / p.projected_ms);
    print_stages(stages, 1.0 / static_cast<double>(n), "per token, events");
    std::fflush(stdout);
  }
  return 0;
}

const cli::BenchRegistration kDecode{"decode", "decode steps of the whole model at batch x context (GPU)", run_decode};
const cli::BenchRegistration kPrefill{"prefill", "prefill of the whole model (GPU)", run_prefill};

}  // namespace
}  // namespace megamoe::bench
