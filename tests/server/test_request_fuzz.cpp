// Randomised mutation of request bodies: 10,000 mutants of valid chat,
// completion and Anthropic bodies through the request parsers (each either
// parses or is a 400 ApiError, never another exception or a crash), and
// 1,000 through the HTTP server (every reply a well-formed JSON error or
// success, the server alive afterwards).
#include <gtest/gtest.h>


#include "server/api_error.hpp"
#include "server/request.hpp"
#include "request_mutations.hpp"
#include "server_test_util.hpp"

namespace megamoe::server::testing {
namespace {

TEST(RequestFuzz, MutatedBodiesParseOrAre400s) {
  const ApiContext ctx{tiny_tokenizer(), 0, 1, 320, kContext};
  std::mt19937_64 rng(12345);
  int parsed = 0, rejected = 0;
  for (int i = 0; i < 10000; ++i) {
    const std::size_t which = static_cast<std::size_t>(i) % seeds().size();
    const std::string body = i % 3 == 0 ? mutate_value(seeds()[which], rng) : mutate(seeds()[which], rng);
    try {
      const auto j = parse_body(body);
      if (which <= 1) parse_chat_request(j, ctx);
      else if (which <= 3) parse_completion_request(j, ctx);
      else parse_messages_request(j, ctx);
      ++parsed;
    } catch (const ApiError& e) {
      ASSERT_EQ(e.status(), 400) << body;
      ASSERT_FALSE(std::string(e.what()).empty());
      ++rejected;
    } catch (const std::exception& e) {
      FAIL() << "not an ApiError: " << e.what() << " for body " << body;
    }
  }
  EXPECT_GT(parsed, 100);
  EXPECT_GT(rejected, 1000);
}

TEST(RequestFuzz, MutatedBodiesOverHttpGetWellFormedReplies) {
  ScriptEngine engine({1});  // every completion is EOS at once: replies are quick
  ServerOptions o;
  o.prefill_chunk = kContext;
  TestServer s(o, &engine);
  std::mt19937_64 rng(777);
  const char* paths[] = {"/v1/chat/completions", "/v1/chat/completions", "/v1/completions", "/v1/completions", "/v1/messages"};
  int ok = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::size_t which = static_cast<std::size_t>(i) % seeds().size();
    const std::string body = i % 3 == 0 ? mutate_value(seeds()[which], rng) : mutate(seeds()[which], rng);
    const Reply r = post(s, paths[which], body);
    ASSERT_TRUE(r.status == 200 || r.status == 400) << r.status << " for " << body << " -> " << r.body;
    if (r.status == 200) {
      ++ok;
      if (r.headers.count("Content-Type") && r.headers.find("Content-Type")->second == "text/event-stream") {
        EXPECT_NE(r.body.find("data: "), std::string::npos);
      } else {
        ASSERT_TRUE(r.json_body.is_object()) << r.body;
      }
    } else {
      ASSERT_TRUE(r.json_body.is_object()) << r.body;
      EXPECT_TRUE(r.json_body.contains("error")) << r.body;
    }
  }
  EXPECT_GT(ok, 10);
  EXPECT_EQ(get(s, "/health").status, 200);
  EXPECT_EQ(metric(s, "megamoe_state_slots_in_use"), 0);
}

}  // namespace
}  // namespace megamoe::server::testing
