// Running the megamoe binary from a test (MEGAMOE_BINARY_PATH): its exit code
// and output, with stdout and stderr apart or merged in the order written.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace megamoe::testing {

struct CliRun {
  int code = -1;
  std::string out, err;  // merged: everything is in `out`
};

namespace detail {
// Runs `args` with stderr sent by `stderr_redirect`; collects stdout.
inline CliRun run(const std::string& args, const std::string& stderr_redirect) {
  const std::string cmd = std::string(MEGAMOE_BINARY_PATH) + " " + args + " " + stderr_redirect;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  CliRun r;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof(buf), pipe)) r.out.append(buf, n);
  r.code = WEXITSTATUS(::pclose(pipe));
  return r;
}
}  // namespace detail

// `args` are appended to the binary's path as they are (already shell-quoted).
inline CliRun run_megamoe(const std::string& args) {
  const auto err_path = std::filesystem::temp_directory_path() / ("megamoe_cli_err_" + std::to_string(::getpid()));
  CliRun r = detail::run(args, "2> " + err_path.string());
  std::ostringstream err;
  err << std::ifstream(err_path).rdbuf();
  r.err = err.str();
  std::filesystem::remove(err_path);
  return r;
}

inline CliRun run_megamoe_merged(const std::string& args) { return detail::run(args, "2>&1"); }

}  // namespace megamoe::testing
