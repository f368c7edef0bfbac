// --devices / --ranks: the ranks a model is split over (docs/parallel.md),
// shared by generate and serve. --devices N (or a list 0,1,3) runs one CUDA
// device per rank (NCCL); --ranks N runs N ranks of the chosen backend, on the
// CPU as threads (so the sharded path can be tried without GPUs), on cuda all
// on one GPU over host memory (a functional test of the split, not fast).
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "cli/options.hpp"
#include "model/deepseek_v4/model.hpp"

namespace megamoe::cli {

struct RankArgs {
  std::string devices, ranks;  // as typed; parsed strictly by apply_rank_args
};

inline void add_rank_options(CLI::App& app, RankArgs& a) {
  app.add_option("--devices", a.devices, "CUDA devices, one rank each: a count N (devices 0..N-1) or a list 0,1");
  app.add_option("--ranks", a.ranks,
                 "ranks to split the model over (--device cpu: threads; --device cuda without --devices: all on one "
                 "GPU, staged through host memory, for testing; default 1)");
}

// Sets options.ranks / devices (and cuda for --devices) from the typed values.
inline void apply_rank_args(const RankArgs& a, const std::string& device_text, dsv4::ModelOptions& options) {
  constexpr int64_t kMaxRanks = 64;
  if (!a.ranks.empty()) options.ranks = parse_int_option("--ranks", a.ranks, 1, kMaxRanks);
  if (a.devices.empty()) {
    if (options.device == DeviceKind::kCuda) options.devices.clear();  // ranks 0 .. ranks-1
    return;
  }
  MEGAMOE_CHECK(device_text != "cpu", "--devices lists CUDA devices; use --ranks N for the CPU backend over threads");
  options.device = DeviceKind::kCuda;
  if (a.devices.find(',') == std::string::npos) {
    const int64_t n = parse_int_option("--devices", a.devices, 1, kMaxRanks);
    for (int64_t d = 0; d < n; ++d) options.devices.push_back(static_cast<int>(d));
  } else {
    size_t begin = 0;
    while (begin <= a.devices.size()) {
      const size_t end = std::min(a.devices.find(',', begin), a.devices.size());
      const int d = static_cast<int>(parse_int_option("--devices", a.devices.substr(begin, end - begin), 0, 1023));
      for (int seen : options.devices) MEGAMOE_CHECK(seen != d, "--devices lists device ", d, " twice");
      options.devices.push_back(d);
      begin = end + 1;
    }
  }
  MEGAMOE_CHECK(a.ranks.empty() || options.ranks == static_cast<int64_t>(options.devices.size()), "--ranks ",
                options.ranks, " disagrees with --devices ", a.devices, " (", options.devices.size(), " devices)");
  options.ranks = static_cast<int64_t>(options.devices.size());
}

}  // namespace megamoe::cli
