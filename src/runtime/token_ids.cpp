#include "runtime/token_ids.hpp"

#include <cctype>
#include <sstream>

#include "core/error.hpp"

namespace megamoe {

std::vector<int32_t> parse_token_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const size_t first = item.find_first_not_of(" \t"), last = item.find_last_not_of(" \t");
    MEGAMOE_CHECK(first != std::string::npos, "--ids '", text, "': empty item at position ", ids.size());
    const std::string digits = item.substr(first, last - first + 1);
    bool ok = digits.size() <= 10;
    for (char ch : digits) ok = ok && std::isdigit(static_cast<unsigned char>(ch));
    const long long value = ok ? std::stoll(digits) : -1;
    MEGAMOE_CHECK(ok && value <= INT32_MAX, "--ids: '", digits, "' is not a token id (a non-negative integer)");
    ids.push_back(static_cast<int32_t>(value));
  }
  MEGAMOE_CHECK(!ids.empty(), "--ids is empty: give at least one token id");
  if (!text.empty() && text.back() == ',') MEGAMOE_THROW("--ids '", text, "': trailing comma");
  return ids;
}

}  // namespace megamoe
