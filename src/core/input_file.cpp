#include "core/input_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "core/error.hpp"

namespace megamoe {
namespace {

std::string errno_text() { return std::strerror(errno); }

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a plain file";
}

std::string limit_text(std::size_t max_bytes, const std::string& limit_name) {
  return str_cat("the limit of ", max_bytes, " bytes", limit_name.empty() ? "" : " (" + limit_name + ")");
}

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::string read_input_file(const std::filesystem::path& path, std::size_t max_bytes, const std::string& limit_name) {
  const std::string source = path.string();
  // Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
  const Fd file{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)};
  MEGAMOE_CHECK(file.fd >= 0, source, ": cannot open the file (", errno_text(), ")");
  struct stat info {};
  MEGAMOE_CHECK(::fstat(file.fd, &info) == 0, source, ": cannot stat the file (", errno_text(), ")");
  MEGAMOE_CHECK(S_ISREG(info.st_mode), source, ": not a regular file (", file_kind(info.st_mode), ")");
  const auto size = static_cast<unsigned long long>(info.st_size);
  MEGAMOE_CHECK(size <= max_bytes, source, ": the file has ", size, " bytes, over ", limit_text(max_bytes, limit_name));
  std::string text;
  text.resize(static_cast<std::size_t>(size) + 1);  // one more byte tells a file that grew
  std::size_t have = 0;
  for (;;) {
    if (have == text.size()) {
      MEGAMOE_CHECK(have <= max_bytes, source, ": the file grew past ", limit_text(max_bytes, limit_name),
                    " while being read");
      const std::size_t cap = max_bytes == SIZE_MAX ? max_bytes : max_bytes + 1;
      text.resize(std::max(text.size() + 1, std::min(text.size() * 2, cap)));
    }
    const ssize_t n = ::read(file.fd, text.data() + have, text.size() - have);
    if (n < 0 && errno == EINTR) continue;
    MEGAMOE_CHECK(n >= 0, source, ": read failed (", errno_text(), ")");
    if (n == 0) break;
    have += static_cast<std::size_t>(n);
  }
  MEGAMOE_CHECK(have <= max_bytes, source, ": the file grew past ", limit_text(max_bytes, limit_name),
                " while being read");
  text.resize(have);
  return text;
}

std::string read_input_stream(std::FILE* stream, const std::string& name, std::size_t max_bytes,
                              const std::string& limit_name) {
  std::string text;
  char buffer[1 << 16];
  for (;;) {
    // At most one byte past the limit is ever read (it tells "over" from "exactly at").
    const std::size_t remaining = max_bytes - text.size();
    const std::size_t want = remaining >= sizeof buffer ? sizeof buffer : remaining + 1;
    const std::size_t n = std::fread(buffer, 1, want, stream);
    text.append(buffer, n);
    MEGAMOE_CHECK(text.size() <= max_bytes, name, ": the input exceeds ", limit_text(max_bytes, limit_name));
    if (n < want) {
      MEGAMOE_CHECK(!std::ferror(stream), name, ": read failed");
      break;
    }
  }
  return text;
}

std::string read_input(const std::string& path, std::size_t max_bytes, const std::string& limit_name) {
  if (path == "-") return read_input_stream(stdin, "stdin", max_bytes, limit_name);
  return read_input_file(path, max_bytes, limit_name);
}

std::string quote_for_message(const std::string& text, std::size_t max_chars) {
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < max_chars; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > max_chars) out += "...";
  return out;
}

}  // namespace megamoe
