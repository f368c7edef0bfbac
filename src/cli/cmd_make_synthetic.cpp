// `megamoe make-synthetic`: a random checkpoint at DeepSeek-V4 widths in the
// official formats (src/core/synthetic_checkpoint.hpp), for benchmarks and the
// real-width GPU tests. The Flash preset with 2 layers is about 10 GB.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/command.hpp"
#include "core/synthetic_checkpoint.hpp"

namespace {

int run_make_synthetic(int argc, char** argv) {
  CLI::App app{"write a random DeepSeek-V4 checkpoint at real widths in the official formats", argv[0]};
  std::string out;
  megamoe::SyntheticSpec spec;
  app.add_option("--out", out, "output directory")->required();
  app.add_option("--preset", spec.preset, "flash (V4-Flash widths), pro (V4-Pro), small (tests)");
  app.add_option("--layers", spec.layers, "decoder layers (CSA, HCA, SWA alternate; layer 0 is a hash layer)");
  app.add_option("--experts", spec.experts, "routed expert format: nvfp4 or mxfp4");
  app.add_option("--seed", spec.seed, "random seed");
  CLI11_PARSE(app, argc, argv);
  const uint64_t bytes = megamoe::write_synthetic_checkpoint(out, spec);
  std::printf("wrote %s: %s preset, %lld layers, %s experts, %.2f GB\n", out.c_str(), spec.preset.c_str(),
              static_cast<long long>(spec.layers), spec.experts.c_str(), static_cast<double>(bytes) / 1e9);
  return 0;
}

const megamoe::cli::Registration kMakeSynthetic{"make-synthetic", "write a random checkpoint at DeepSeek-V4 widths",
                                                run_make_synthetic};

}  // namespace
