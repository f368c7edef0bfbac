// Subcommands of the `megamoe` program register themselves here, one file
// each (cmd_<name>.cpp), so adding one never touches main.cpp:
//
//   static const megamoe::cli::Registration kInspect{
//       "inspect", "describe a checkpoint directory", run_inspect};
//
// A command receives the arguments after its name (argv[0] = "megamoe <name>"),
// returns the exit code, parses its options with CLI11 (CLI11_PARSE, which
// handles --help and bad flags), and reports errors by throwing megamoe::Error.
//
// CLI11_PARSE is redefined here (this header includes CLI11 first, so the
// order of includes does not matter): --help prints the help and returns 0; any
// parse error becomes a megamoe::Error, i.e. exit code 1 and one line
// "megamoe <name>: error: <problem>" from main (CLI11's own exit codes 100-115
// and its two-line messages are never seen), with quoted values cut short.
#pragma once

#include <CLI/CLI.hpp>

#include "core/error.hpp"
#include "core/input_file.hpp"

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

// True when help was asked for (and printed); throws megamoe::Error on a parse error.
inline bool parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return false;
  } catch (const CLI::CallForHelp& e) {
    app.exit(e);
    return true;
  } catch (const CLI::CallForAllHelp& e) {
    app.exit(e);
    return true;
  } catch (const CLI::CallForVersion& e) {
    app.exit(e);
    return true;
  } catch (const CLI::ParseError& e) {
    std::string message = e.what();
    for (char& c : message) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    MEGAMOE_THROW(quote_for_message(message, 240), " (see --help)");
  }
}

}  // namespace megamoe::cli

#undef CLI11_PARSE
#define CLI11_PARSE(app, argc, argv) \
  do {                                                                   \
    if (::megamoe::cli::parse_command_line((app), (argc), (argv))) return 0; \
  } while (0)
