// Subcommands of the `megamoe` program register themselves here, one file
// each (cmd_<name>.cpp), so adding one never touches main.cpp:
//
//   static const megamoe::cli::Registration kInspect{
//       "inspect", "describe a checkpoint directory", run_inspect};
//
// A command receives the arguments after its name (argv[0] = "megamoe <name>"),
// returns the exit code, parses its options with CLI11 (CLI11_PARSE, which
// handles --help and bad flags), and reports errors by throwing megamoe::Error.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace megamoe::cli {

using CommandFn = std::function<int(int argc, char** argv)>;

struct Command {
  std::string summary;
  CommandFn run;
};

std::map<std::string, Command>& commands();

struct Registration {
  Registration(const std::string& name, const std::string& summary, CommandFn run) {
    commands()[name] = Command{summary, std::move(run)};
  }
};

// `megamoe bench <name>`: benchmarks register the same way in their own table
// (src/cli/cmd_bench.cpp dispatches; argv[0] = "megamoe bench <name>").
std::map<std::string, Command>& bench_commands();

struct BenchRegistration {
  BenchRegistration(const std::string& name, const std::string& summary, CommandFn run) {
    bench_commands()[name] = Command{summary, std::move(run)};
  }
};

}  // namespace megamoe::cli
