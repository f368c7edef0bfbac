// `megamoe bench <name> [options]`: the benchmarks (BENCHMARKS.md). Each one
// registers itself with a BenchRegistration; the GPU ones (bench/) are built
// with CUDA only, so this lists what this build has.
#include <cstdio>
#include <string>

#include "cli/command.hpp"

namespace megamoe::cli {

std::map<std::string, Command>& bench_commands() {
  static std::map<std::string, Command> registry;
  return registry;
}

}  // namespace megamoe::cli

namespace {

void print_benches() {
  std::fprintf(stderr, "usage: megamoe bench <name> [options]\n\nbenchmarks in this build:\n");
  for (const auto& [name, command] : megamoe::cli::bench_commands())
    std::fprintf(stderr, "  %-10s %s\n", name.c_str(), command.summary.c_str());
  std::fprintf(stderr, "\n`megamoe bench <name> --help` describes its options.\n");
}

int run_bench(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    print_benches();
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  const auto& registry = megamoe::cli::bench_commands();
  const auto it = registry.find(name);
  if (it == registry.end()) {
    std::fprintf(stderr, "megamoe bench: unknown benchmark '%s'\n", name.c_str());
    print_benches();
    return 2;
  }
  std::string program = "megamoe bench " + name;
  argv[1] = program.data();
  return it->second.run(argc - 1, argv + 1);
}

const megamoe::cli::Registration kBench{"bench", "benchmarks: decode, prefill, moe, fp8-gemm, tokenizer", run_bench};

}  // namespace
