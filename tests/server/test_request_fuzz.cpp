// Randomised mutation of request bodies: 10,000 mutants of valid chat,
// completion and Anthropic bodies through the request parsers (each either
// parses or is a 400 ApiError, never another exception or a crash), and
// 1,000 through the HTTP server (every reply a well-formed JSON error or
// success, the server alive afterwards).
#include <gtest/gtest.h>

#include <random>

#include "server/api_error.hpp"
#include "server/request.hpp"
#include "server_test_util.hpp"

namespace megamoe::server::testing {
namespace {

const std::vector<std::string>& seeds() {
  static const std::vector<std::string> s = {
      R"({"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0.5, "top_p": 0.9, "stop": ["x"], "stream": true, "stream_options": {"include_usage": true}})",
      R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}, {"role": "tool", "tool_call_id": "c1", "content": "ok"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}], "tool_choice": "auto", "max_completion_tokens": 3, "logprobs": true, "top_logprobs": 2, "seed": 5, "chat_template_kwargs": {"thinking": true}, "reasoning_effort": "max"})",
      R"({"prompt": "Once upon a time", "max_tokens": 5, "logprobs": 1, "stop": "x", "top_k": 3})",
      R"({"prompt": [0, 5, 7], "max_tokens": 2})",
      R"({"model": "c", "max_tokens": 5, "system": "s", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}, {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]}, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}]}], "tools": [{"name": "f", "input_schema": {"type": "object"}}], "thinking": {"type": "enabled"}, "stop_sequences": ["z"]})",
  };
  return s;
}

const std::vector<std::string> kFragments = {"null", "-1", "0", "1e999", "-0.0", "\"\"", "[]", "{}", "true", "\"\\u0000\"",
                                             "\"\\ud800\"", "9223372036854775808", "\"<｜end▁of▁sentence｜>\"", ",", ":", "\"",
                                             "{\"role\": \"tool\"}", "\xff", "\xc3", "[[[[", "}}}"};

std::string mutate(std::string s, std::mt19937_64& rng) {
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    if (s.empty()) s = "{";
    const std::size_t at = rng() % s.size();
    switch (rng() % 6) {
      case 0: s[at] = static_cast<char>(rng() & 0xff); break;
      case 1: s.erase(at, 1 + rng() % 8); break;
      case 2: s.insert(at, kFragments[rng() % kFragments.size()]); break;
      case 3: s.insert(at, s.substr(rng() % s.size(), rng() % 16)); break;
      case 4: s.resize(at); break;
      case 5: {  // replace a JSON value after a colon with a fragment
        const std::size_t colon = s.find(':', at);
        if (colon != std::string::npos) {
          std::size_t end = s.find_first_of(",}]", colon + 1);
          if (end == std::string::npos) end = s.size();
          s.replace(colon + 1, end - colon - 1, " " + kFragments[rng() % kFragments.size()]);
        }
        break;
      }
    }
  }
  return s;
}

// Structured mutation: a random member of the parsed seed gets a value of another type.
std::string mutate_value(const std::string& seed, std::mt19937_64& rng) {
  json j = json::parse(seed);
  std::vector<json*> nodes;
  std::function<void(json&)> walk = [&](json& v) {
    nodes.push_back(&v);
    if (v.is_structured()) for (auto& c : v) walk(c);
  };
  walk(j);
  json* target = nodes[rng() % nodes.size()];
  const json options[] = {json(), json(-5), json(1e300), json("x"), json::array(), json::object(), json(true),
                          json::array({1, 2}), json(std::string(3, 'a')), json(2)};
  *target = options[rng() % std::size(options)];
  return j.dump();
}

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
