// The request parsers of `megamoe serve` (src/server/request.cpp, with the
// chat encoding and tokenizer below them) on 10,000 mutated bodies, built
// with AddressSanitizer and UBSan: every body parses or is a 400 ApiError;
// no other exception, no sanitizer report.
#include <gtest/gtest.h>

#include "server/api_error.hpp"
#include "server/request.hpp"
#include "request_mutations.hpp"
#include "text/tokenizer.hpp"

namespace megamoe::server::testing {
namespace {

TEST(RequestFuzzAsan, TenThousandMutatedBodiesParseOrAre400s) {
  const text::Tokenizer tokenizer =
      text::Tokenizer::from_file(std::string(MEGAMOE_TEST_DATA_DIR) + "/tiny-tokenizer/tokenizer.json");
  const ApiContext ctx{tokenizer, 0, 1, 320, 4096};
  std::mt19937_64 rng(20261202);
  int parsed = 0, rejected = 0;
  for (int i = 0; i < 10000; ++i) {
    const std::size_t which = static_cast<std::size_t>(i) % seeds().size();
    const std::string body = mutant(i, rng);
    try {
      const auto j = parse_body(body);
      if (which <= 1) parse_chat_request(j, ctx);
      else if (which <= 3) parse_completion_request(j, ctx);
      else parse_messages_request(j, ctx);
      ++parsed;
    } catch (const ApiError& e) {
      ASSERT_EQ(e.status(), 400) << body;
      ++rejected;
    } catch (const std::exception& e) {
      FAIL() << "not an ApiError: " << e.what() << " for body " << body;
    }
  }
  EXPECT_GT(parsed, 100);
  EXPECT_GT(rejected, 1000);
}

}  // namespace
}  // namespace megamoe::server::testing
