// n > 1 on /v1/chat/completions and /v1/completions (tiny-text model): n
// choices with their own index, finish_reason and logprobs, usage counting
// the prompt once, streams carrying every index with a finish per choice and
// one usage chunk, greedy choices equal, seeded choices distinct and
// reproducible (choice i samples with seed + i), admission counting n
// sequences, and a disconnect freeing every slot.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "server_test_util.hpp"

namespace megamoe::server::testing {
namespace {

std::string body(int n, int max_tokens, const std::string& extra = "") {
  json b = {{"model", "tiny"},
            {"messages", json::array({json{{"role", "user"}, {"content", "Once upon a time"}}})},
            {"max_tokens", max_tokens},
            {"temperature", 0},
            {"ignore_eos", true},
            {"n", n}};
  if (!extra.empty()) b.update(json::parse(extra));
  return b.dump();
}

std::vector<std::string> contents(const Reply& r) {
  std::vector<std::string> out;
  for (const json& c : r.json_body["choices"]) out.push_back(c["message"]["content"].get<std::string>());
  return out;
}

TEST(ServerChoices, NonStreamedChoicesHaveIndicesAndUsageSums) {
  TestServer s;
  const Reply one = post(s, "/v1/chat/completions", body(1, 8));
  ASSERT_EQ(one.status, 200) << one.body;
  const Reply r = post(s, "/v1/chat/completions", body(3, 8, R"({"logprobs": true})"));
  ASSERT_EQ(r.status, 200) << r.body;
  const json& choices = r.json_body["choices"];
  ASSERT_EQ(choices.size(), 3u) << r.body;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(choices[i]["index"], i);
    EXPECT_EQ(choices[i]["finish_reason"], "length");
    EXPECT_EQ(choices[i]["logprobs"]["content"].size(), 8u);
    // Greedy: every choice is the n = 1 reply.
    EXPECT_EQ(choices[i]["message"]["content"], one.json_body["choices"][0]["message"]["content"]) << i;
  }
  const int64_t prompt = one.json_body["usage"]["prompt_tokens"];
  EXPECT_EQ(r.json_body["usage"]["prompt_tokens"], prompt) << "the prompt counts once";
  EXPECT_EQ(r.json_body["usage"]["completion_tokens"], 24);
  EXPECT_EQ(r.json_body["usage"]["total_tokens"], prompt + 24);

  // Completions: each choice's text offsets start at 0.
  const Reply c = post(s, "/v1/completions",
                       R"({"prompt": "Hello", "max_tokens": 4, "n": 2, "logprobs": 1, "temperature": 0})");
  ASSERT_EQ(c.status, 200) << c.body;
  ASSERT_EQ(c.json_body["choices"].size(), 2u);
  for (int i = 0; i < 2; ++i) {
    const json& choice = c.json_body["choices"][i];
    EXPECT_EQ(choice["index"], i);
    EXPECT_EQ(choice["text"], c.json_body["choices"][0]["text"]);
    EXPECT_EQ(choice["logprobs"]["text_offset"][0], 0);
    EXPECT_EQ(choice["logprobs"]["tokens"].size(), 4u);
  }
  EXPECT_EQ(c.json_body["usage"]["completion_tokens"], 8);
  EXPECT_TRUE(eventually([&] { return metric(s, "megamoe_state_slots_in_use") == 0; }));
}

TEST(ServerChoices, StreamedChoicesEachEndAndUsageComesOnce) {
  TestServer s;
  const Reply whole = post(s, "/v1/chat/completions", body(3, 10));
  ASSERT_EQ(whole.status, 200) << whole.body;
  const Stream st = post_stream(s, "/v1/chat/completions",
                                body(3, 10, R"({"stream": true, "stream_options": {"include_usage": true}})"));
  ASSERT_EQ(st.status, 200) << st.raw;
  ASSERT_GE(st.data.size(), 2u);
  EXPECT_EQ(st.data.back(), "[DONE]");
  std::map<int64_t, std::string> text;
  std::map<int64_t, int> finishes, roles;
  int usage_chunks = 0;
  for (std::size_t k = 0; k + 1 < st.data.size(); ++k) {
    const json c = json::parse(st.data[k]);
    if (c["choices"].empty()) {
      ++usage_chunks;
      EXPECT_EQ(k + 2, st.data.size()) << "the usage chunk is the last before [DONE]";
      EXPECT_EQ(c["usage"]["completion_tokens"], 30);
      EXPECT_EQ(c["usage"]["prompt_tokens"], whole.json_body["usage"]["prompt_tokens"]);
      continue;
    }
    ASSERT_EQ(c["choices"].size(), 1u);
    const json& choice = c["choices"][0];
    const int64_t index = choice["index"];
    ASSERT_TRUE(index >= 0 && index < 3) << st.data[k];
    EXPECT_EQ(finishes[index], 0) << "nothing for choice " << index << " after its finish";
    const json& delta = choice["delta"];
    if (delta.contains("role")) ++roles[index];
    if (delta.contains("content") && delta["content"].is_string()) text[index] += delta["content"].get<std::string>();
    if (!choice["finish_reason"].is_null()) {
      EXPECT_EQ(choice["finish_reason"], "length");
      ++finishes[index];
    }
  }
  EXPECT_EQ(usage_chunks, 1);
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(roles[i], 1) << i;
    EXPECT_EQ(finishes[i], 1) << i;
    EXPECT_EQ(text[i], whole.json_body["choices"][i]["message"]["content"]) << i;
  }
}

TEST(ServerChoices, SeededChoicesAreDistinctAndReproducible) {
  TestServer s;
  const std::string sampled = body(3, 16, R"({"temperature": 1.0, "seed": 41})");
  const Reply a = post(s, "/v1/chat/completions", sampled);
  const Reply b = post(s, "/v1/chat/completions", sampled);
  ASSERT_EQ(a.status, 200) << a.body;
  ASSERT_EQ(b.status, 200) << b.body;
  const std::vector<std::string> ca = contents(a);
  ASSERT_EQ(ca.size(), 3u);
  EXPECT_EQ(std::set<std::string>(ca.begin(), ca.end()).size(), 3u) << "three distinct samples";
  EXPECT_EQ(ca, contents(b)) << "the same seed gives the same choices";
  // The rule: choice i samples as a single request with seed + i.
  const Reply second = post(s, "/v1/chat/completions", body(1, 16, R"({"temperature": 1.0, "seed": 42})"));
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(contents(second).at(0), ca[1]);
  // Streamed choices equal the non-streamed ones.
  const Stream st = post_stream(s, "/v1/chat/completions", body(3, 16, R"({"temperature": 1.0, "seed": 41, "stream": true})"));
  std::map<int64_t, std::string> text;
  for (const std::string& d : st.data) {
    if (d == "[DONE]") continue;
    const json c = json::parse(d);
    const json& delta = c["choices"][0]["delta"];
    if (delta.contains("content") && delta["content"].is_string()) {
      text[c["choices"][0]["index"].get<int64_t>()] += delta["content"].get<std::string>();
    }
  }
  for (int64_t i = 0; i < 3; ++i) EXPECT_EQ(text[i], ca[static_cast<std::size_t>(i)]) << i;
}

TEST(ServerChoices, BadNIsA400NamingN) {
  ServerOptions o;
  o.max_batch = 2;
  o.max_queue = 1;
  TestServer s(o);
  for (const char* n : {"0", "17", "-1", "1.5", "true", "\"2\"", "[2]"}) {
    for (const char* path : {"/v1/chat/completions", "/v1/completions"}) {
      json b = json::parse(body(1, 4));
      if (std::string(path) == "/v1/completions") b = {{"prompt", "Hello"}, {"max_tokens", 4}};
      b["n"] = json::parse(n);
      const Reply r = post(s, path, b.dump());
      EXPECT_EQ(r.status, 400) << path << " n = " << n << ": " << r.body;
      EXPECT_EQ(r.json_body["error"]["param"], "n") << path << " n = " << n << ": " << r.body;
      EXPECT_EQ(r.json_body["error"]["type"], "invalid_request_error") << r.body;
    }
  }
  // In range but more than the server ever admits at once (2 running + 1 waiting).
  const Reply big = post(s, "/v1/chat/completions", body(4, 4));
  EXPECT_EQ(big.status, 400) << big.body;
  EXPECT_EQ(big.json_body["error"]["param"], "n") << big.body;
  EXPECT_NE(big.json_body["error"]["message"].get<std::string>().find("never"), std::string::npos) << big.body;
  // n = 3 fits (two run, one waits for a slot).
  const Reply fits = post(s, "/v1/chat/completions", body(3, 4));
  EXPECT_EQ(fits.status, 200) << fits.body;
  EXPECT_EQ(fits.json_body["choices"].size(), 3u);
  // Anthropic has no n: the field is not read there.
  EXPECT_EQ(get(s, "/health").status, 200);
}

TEST(ServerChoices, DisconnectMidStreamFreesEverySlot) {
  ServerOptions o;
  o.max_batch = 4;
  TestServer s(o);
  const Stream st = post_stream(s, "/v1/chat/completions", body(3, 3500, R"({"stream": true})"), 6);
  EXPECT_EQ(st.data.size(), 6u);
  EXPECT_TRUE(eventually([&] { return metric(s, "megamoe_state_slots_in_use") == 0; }, std::chrono::seconds(5)));
  EXPECT_EQ(metric(s, "megamoe_requests_running"), 0);
  EXPECT_EQ(metric(s, "megamoe_requests_waiting"), 0);
  EXPECT_TRUE(eventually([&] { return metric(s, "megamoe_requests_finished_total{finish_reason=\"cancelled\"}") == 1; }));
  EXPECT_LT(metric(s, "megamoe_generation_tokens_total"), 3000) << "the cancelled choices stopped early";

  // A non-streamed request of 2 choices whose client gives up (a slow
  // scripted engine: 10 ms a step) frees both slots too.
  ScriptEngine slow({5}, std::chrono::milliseconds(10));
  ServerOptions so;
  so.prefill_chunk = kContext;
  TestServer s2(so, &slow);
  httplib::Client c = s2.client();
  c.set_read_timeout(0, 200000);
  const auto r = c.Post("/v1/chat/completions", body(2, 3000), "application/json");
  EXPECT_FALSE(r) << "the client timed out";
  EXPECT_TRUE(eventually([&] { return metric(s2, "megamoe_state_slots_in_use") == 0; }, std::chrono::seconds(5)));
  EXPECT_EQ(metric(s2, "megamoe_requests_running"), 0);
  EXPECT_LT(metric(s2, "megamoe_generation_tokens_total"), 1000);
  EXPECT_EQ(post(s, "/v1/chat/completions", body(2, 3)).status, 200);
}

}  // namespace
}  // namespace megamoe::server::testing
