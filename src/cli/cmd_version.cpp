// `megamoe version`: the build's version and which backends it carries.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "cli/command.hpp"

namespace {

int run_version(int argc, char** argv) {
  CLI::App app{"print the megamoe version and the backends built in", argv[0]};
  CLI11_PARSE(app, argc, argv);
#ifdef MEGAMOE_HAVE_CUDA
  const char* cuda = "cuda (sm_90a)";
#else
  const char* cuda = "none";
#endif
  std::printf("megamoe 0.1.0\nbackends: cpu, %s\n", cuda);
  return 0;
}

const megamoe::cli::Registration kVersion{"version", "print the version and the backends built in", run_version};

}  // namespace
