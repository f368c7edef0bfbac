// `megamoe <subcommand> [args]`: dispatches to the registered subcommands and
// is the only place that turns an exception into an exit code.
#include <cstdio>
#include <exception>
#include <string>

#include "cli/command.hpp"
#include "core/error.hpp"

namespace megamoe::cli {

std::map<std::string, Command>& commands() {
  static std::map<std::string, Command> registry;
  return registry;
}

}  // namespace megamoe::cli

namespace {

void print_usage() {
  std::fprintf(stderr, "usage: megamoe <command> [options]\n\ncommands:\n");
  for (const auto& [name, command] : megamoe::cli::commands()) {
    std::fprintf(stderr, "  %-10s %s\n", name.c_str(), command.summary.c_str());
  }
  std::fprintf(stderr, "\n`megamoe <command> --help` describes a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  const auto& registry = megamoe::cli::commands();
  const auto it = registry.find(name);
  if (it == registry.end()) {
    std::fprintf(stderr, "megamoe: unknown command '%s'\n", name.c_str());
    print_usage();
    return 2;
  }
  std::string program = "megamoe " + name;
  argv[1] = program.data();
  try {
    return it->second.run(argc - 1, argv + 1);
  } catch (const megamoe::Error& e) {
    std::fprintf(stderr, "megamoe %s: error: %s\n", name.c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "megamoe %s: error: %s\n", name.c_str(), e.what());
    return 1;
  }
}
