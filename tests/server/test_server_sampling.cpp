// Penalties, logit_bias and min_tokens through the HTTP API (tiny-text model,
// greedy): a +100 bias forces its token, min_tokens holds EOS back; with presence_penalty every greedy choice is
// the argmax of the step's reported (unadjusted) logprobs minus the penalty of
// the tokens generated before it, recomputed here from the reply alone.
#include <gtest/gtest.h>

#include <set>

#include "server_test_util.hpp"

namespace megamoe::server::testing {
namespace {

json chat(int max_tokens, const json& extra) {
  json b = {{"model", "tiny"},
            {"messages", json::array({json{{"role", "user"}, {"content", "Once upon a time"}}})},
            {"max_tokens", max_tokens},
            {"temperature", 0},
            {"ignore_eos", true}};
  b.update(extra);
  return b;
}

TEST(ServerSampling, PositiveBiasForcesTheToken) {
  TestServer s;
  const std::vector<int32_t> ids = tiny_tokenizer().encode(" castle");
  ASSERT_FALSE(ids.empty());
  const int32_t id = ids[0];
  const Reply r = post(s, "/v1/completions",
                       json{{"prompt", "Hello"}, {"max_tokens", 5}, {"temperature", 0}, {"ignore_eos", true},
                            {"logit_bias", {{std::to_string(id), 100}}}}
                           .dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json_body["choices"][0]["text"], tiny_tokenizer().decode(std::vector<int32_t>(5, id)));
  EXPECT_EQ(r.json_body["choices"][0]["finish_reason"], "length");
}

TEST(ServerSampling, NegativeBiasBansTheGreedyToken) {
  TestServer s;
  const Reply plain =
      post(s, "/v1/completions", R"({"prompt": "Hello", "max_tokens": 1, "temperature": 0, "ignore_eos": true})");
  ASSERT_EQ(plain.status, 200) << plain.body;
  const std::vector<int32_t> first =
      tiny_tokenizer().encode(plain.json_body["choices"][0]["text"].get<std::string>());
  ASSERT_EQ(first.size(), 1u) << plain.body;
  const Reply banned = post(s, "/v1/completions",
                            json{{"prompt", "Hello"}, {"max_tokens", 1}, {"temperature", 0}, {"ignore_eos", true},
                                 {"logit_bias", {{std::to_string(first[0]), -100}}}}
                                .dump());
  ASSERT_EQ(banned.status, 200) << banned.body;
  EXPECT_NE(banned.json_body["choices"][0]["text"], plain.json_body["choices"][0]["text"]);
}

TEST(ServerSampling, PresencePenaltyChoicesMatchTheReportedLogprobs) {
  TestServer s;
  constexpr int kTokens = 19;  // the top 20 hold the adjusted argmax (below)
  constexpr double kPenalty = 2.0;
  const Reply r = post(s, "/v1/chat/completions",
                       chat(kTokens, {{"presence_penalty", kPenalty}, {"logprobs", true}, {"top_logprobs", 20}}).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json& steps = r.json_body["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(steps.size(), static_cast<size_t>(kTokens)) << r.body;
  std::set<json> generated;  // tokens by their bytes
  int changed = 0;           // steps where the penalty moved the choice off the model's argmax
  for (size_t t = 0; t < steps.size(); ++t) {
    const json& step = steps[t];
    // Only the tokens generated so far carry the penalty, so the adjusted argmax is among the top
    // |generated| + 1 <= t + 1 <= 19 of the 20 reported.
    ASSERT_LE(generated.size() + 1, step["top_logprobs"].size());
    double best = -1e30;
    json best_bytes;
    for (const json& cand : step["top_logprobs"]) {
      const double v = cand["logprob"].get<double>() - (generated.count(cand["bytes"]) ? kPenalty : 0.0);
      if (v > best) best = v, best_bytes = cand["bytes"];
    }
    EXPECT_EQ(step["bytes"], best_bytes) << "step " << t;
    if (step["top_logprobs"][0]["bytes"] != step["bytes"]) ++changed;
    generated.insert(step["bytes"]);
  }
  EXPECT_GT(changed, 0) << "the penalty never changed a choice: the test shows nothing";

  // The same request twice gives the same reply; without the penalty it differs.
  const Reply again = post(s, "/v1/chat/completions", chat(kTokens, {{"presence_penalty", kPenalty}}).dump());
  const Reply plain = post(s, "/v1/chat/completions", chat(kTokens, json::object()).dump());
  ASSERT_EQ(again.status, 200);
  ASSERT_EQ(plain.status, 200);
  EXPECT_EQ(again.json_body["choices"][0]["message"]["content"], r.json_body["choices"][0]["message"]["content"]);
  EXPECT_NE(plain.json_body["choices"][0]["message"]["content"], r.json_body["choices"][0]["message"]["content"]);
}

TEST(ServerSampling, MinTokensHoldsEosBack) {
  constexpr int32_t kEos = 1;  // tiny-text's EOS: the plain request below must end with "stop" at once
  ScriptEngine engine({kEos});  // EOS first, 30 above every other logit
  TestServer s({}, &engine);
  auto tokens = [&](const json& extra) {
    json b = {{"prompt", "Hello"}, {"max_tokens", 10}, {"temperature", 0}};
    b.update(extra);
    const Reply r = post(s, "/v1/completions", b.dump());
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.json_body["choices"][0]["finish_reason"], "stop") << r.body;
    return r.json_body["usage"]["completion_tokens"].get<int64_t>();
  };
  const int64_t plain = tokens(json::object());
  EXPECT_EQ(plain, 1);
  EXPECT_EQ(tokens({{"min_tokens", 3}}), plain + 3);
  EXPECT_EQ(tokens({{"min_tokens", 3}, {"logit_bias", {{std::to_string(kEos), 100}}}}), plain + 3);
}

TEST(ServerSampling, StopTokenIdsEndTheOutputLikeEos) {
  const std::vector<int32_t> ids = tiny_tokenizer().encode(" the cat sat on the mat");
  ASSERT_GE(ids.size(), 4u);
  ScriptEngine engine(ids);
  TestServer s({}, &engine);
  auto reply = [&](const json& extra) {
    json b = {{"prompt", "Hello"}, {"max_tokens", 4}, {"temperature", 0}};
    b.update(extra);
    const Reply r = post(s, "/v1/completions", b.dump());
    EXPECT_EQ(r.status, 200) << r.body;
    return r.json_body["choices"][0];
  };
  EXPECT_EQ(reply(json::object())["finish_reason"], "length");
  const json stopped = reply({{"stop_token_ids", {ids[2]}}});
  EXPECT_EQ(stopped["finish_reason"], "stop");
  EXPECT_EQ(stopped["text"], tiny_tokenizer().decode({ids[0], ids[1]}));  // the stop id itself is not printed
  // ignore_eos leaves them on; min_tokens holds them back (the script's id at step 1 is then not chosen).
  EXPECT_EQ(reply({{"stop_token_ids", {ids[2]}}, {"ignore_eos", true}})["finish_reason"], "stop");
  EXPECT_EQ(reply({{"stop_token_ids", {ids[1]}}})["finish_reason"], "stop");
  EXPECT_EQ(reply({{"stop_token_ids", {ids[1]}}, {"min_tokens", 2}})["finish_reason"], "length");
}

}  // namespace
}  // namespace megamoe::server::testing
