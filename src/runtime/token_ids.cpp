#include "runtime/token_ids.hpp"

#include <cctype>

#include "core/error.hpp"
#include "core/input_file.hpp"

namespace megamoe {
namespace {

bool is_blank(char c, bool any_whitespace) {
  return c == ' ' || c == '\t' || (any_whitespace && (c == '\n' || c == '\r' || c == '\v' || c == '\f'));
}

std::vector<int32_t> parse_ids(const std::string& text, const std::string& source, bool file) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  const size_t n = text.size();
  auto skip_blanks = [&] {
    while (pos < n && is_blank(text[pos], file)) ++pos;
  };
  skip_blanks();
  while (pos < n) {
    const size_t begin = pos;
    while (pos < n && text[pos] != ',' && !is_blank(text[pos], true)) ++pos;
    const std::string item = text.substr(begin, pos - begin);
    MEGAMOE_CHECK(!item.empty(), source, ": empty item at position ", ids.size());
    bool ok = item.size() <= 10;
    for (char ch : item) ok = ok && std::isdigit(static_cast<unsigned char>(ch));
    const long long value = ok ? std::stoll(item) : -1;
    MEGAMOE_CHECK(ok && value <= INT32_MAX, source, ": '", quote_for_message(item, 24),
                  "' is not a token id (a non-negative integer below 2^31), at position ", ids.size());
    ids.push_back(static_cast<int32_t>(value));
    skip_blanks();
    if (pos < n && text[pos] == ',') {
      ++pos;
      skip_blanks();
      MEGAMOE_CHECK(pos < n, source, ": trailing comma");
    } else if (pos < n && !file) {
      MEGAMOE_THROW(source, ": expected ',' after item ", ids.size() - 1);
    }
  }
  MEGAMOE_CHECK(!ids.empty(), source, " is empty: give at least one token id");
  return ids;
}

}  // namespace

std::vector<int32_t> parse_token_ids(const std::string& text, const std::string& source) {
  return parse_ids(text, source, /*file=*/false);
}

std::vector<int32_t> read_token_ids_file(const std::string& path) {
  const std::string source = path == "-" ? "stdin" : path;
  return parse_ids(read_input(path, kMaxIdsFileBytes), source, /*file=*/true);
}

}  // namespace megamoe
