// The one exception type of megamoe. Library code throws it (never exits);
// only main() turns it into an exit code, the server into an HTTP error.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace megamoe {

class Error : public std::runtime_error {
 public:
  Error(std::string message, const char* file, int line)
      : std::runtime_error(std::move(message)), file_(file), line_(line) {}
  const char* file() const noexcept { return file_; }
  int line() const noexcept { return line_; }

 private:
  const char* file_;
  int line_;
};

// Concatenates any streamable values: str_cat("tensor ", name, " has ", n, " dims").
template <typename... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}

[[noreturn]] void throw_error(const char* file, int line, const std::string& message);

}  // namespace megamoe

#define MEGAMOE_THROW(...) ::megamoe::throw_error(__FILE__, __LINE__, ::megamoe::str_cat(__VA_ARGS__))
#define MEGAMOE_CHECK(cond, ...)      \
  do {                                \
    if (!(cond)) MEGAMOE_THROW(__VA_ARGS__); \
  } while (0)
