// `megamoe serve` over HTTP on the CPU backend with tests/data/tiny-text and
// its tokenizer: replies against direct generation, streaming against
// non-streaming, concurrency against sequential replies, disconnects,
// admission limits, errors and authentication.
#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <fstream>
#include <thread>

#include "runtime/session.hpp"
#include "runtime/text_generation.hpp"
#include "server_test_util.hpp"
#include "text/chat_encoding.hpp"

namespace megamoe::server::testing {
namespace {

std::string chat_body(const std::string& user, int max_tokens, const std::string& extra = "") {
  json body = {{"model", "tiny"},
               {"messages", json::array({json{{"role", "user"}, {"content", user}}})},
               {"max_tokens", max_tokens},
               {"temperature", 0},
               {"ignore_eos", true}};
  if (!extra.empty()) body.update(json::parse(extra));
  return body.dump();
}

struct Expected {
  std::string content, reasoning;
  std::vector<int32_t> ids;
};

// What the runtime alone generates greedily for one user message (the oracle).
Expected expected_chat(const std::string& user, int max_tokens, bool thinking = false) {
  text::ChatOptions options;
  options.thinking = thinking;
  const std::vector<int32_t> prompt = encode_chat_prompt(tiny_tokenizer(), single_user_message(user), options);
  GenerateOptions g;
  g.max_new_tokens = max_tokens;
  g.stop_at_eos = false;
  Expected e;
  TextStreamOptions so;
  so.chat = true;
  so.thinking = thinking;
  TextSinks sinks;
  sinks.answer = [&](std::string_view t) { e.content += t; };
  sinks.reasoning = [&](std::string_view t) { e.reasoning += t; };
  TextStreamer streamer(tiny_tokenizer(), so, sinks);
  e.ids = generate(tiny_model(), prompt, g, [&](int32_t id) { return streamer.push(id); });
  streamer.finish();
  return e;
}

// The text of a streamed chat reply (content and reasoning deltas joined).
struct Streamed {
  std::string content, reasoning, finish_reason;
  json usage;
  bool done = false;
  int chunks = 0;
};

Streamed join_chat_stream(const Stream& s) {
  Streamed out;
  for (const std::string& d : s.data) {
    if (d == "[DONE]") {
      out.done = true;
      continue;
    }
    EXPECT_FALSE(out.done) << "data after [DONE]";
    const json c = json::parse(d);
    ++out.chunks;
    if (c.contains("usage") && !c["usage"].is_null()) out.usage = c["usage"];
    if (c["choices"].empty()) continue;
    const json& choice = c["choices"][0];
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    if (choice.contains("delta")) {
      const json& delta = choice["delta"];
      if (delta.contains("content") && delta["content"].is_string()) out.content += delta["content"].get<std::string>();
      if (delta.contains("reasoning_content")) out.reasoning += delta["reasoning_content"].get<std::string>();
    }
    if (!choice["finish_reason"].is_null()) out.finish_reason = choice["finish_reason"];
  }
  return out;
}

TEST(ServerHttp, ModelsHealthAndMetrics) {
  ServerOptions o;
  o.model_name = "tiny-text";
  TestServer s(o);
  const Reply models = get(s, "/v1/models");
  ASSERT_EQ(models.status, 200) << models.body;
  EXPECT_EQ(models.json_body["object"], "list");
  EXPECT_EQ(models.json_body["data"][0]["id"], "tiny-text");
  EXPECT_EQ(models.json_body["data"][0]["max_model_len"], kContext);
  const Reply health = get(s, "/health");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.json_body["status"], "ok");
  const Reply metrics = get(s, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  for (const char* name :
       {"megamoe_requests_running", "megamoe_requests_waiting", "megamoe_prompt_tokens_total",
        "megamoe_generation_tokens_total", "megamoe_time_to_first_token_seconds_bucket",
        "megamoe_time_per_output_token_seconds_bucket", "megamoe_e2e_request_latency_seconds_bucket",
        "megamoe_state_slots_in_use", "megamoe_state_slots_total"}) {
    EXPECT_NE(metrics.body.find(name), std::string::npos) << name;
  }
  const Reply missing = get(s, "/v1/nothing");
  EXPECT_EQ(missing.status, 404);
  EXPECT_TRUE(missing.json_body["error"].is_object()) << missing.body;
}

TEST(ServerHttp, ChatReplyIsWhatTheRuntimeGenerates) {
  TestServer s;
  const Expected want = expected_chat("Hello there", 12);
  const Reply r = post(s, "/v1/chat/completions", chat_body("Hello there", 12));
  ASSERT_EQ(r.status, 200) << r.body;
  const json& choice = r.json_body["choices"][0];
  EXPECT_EQ(r.json_body["object"], "chat.completion");
  EXPECT_EQ(choice["message"]["role"], "assistant");
  EXPECT_EQ(choice["message"]["content"], want.content);
  EXPECT_EQ(choice["finish_reason"], "length");
  const std::vector<int32_t> prompt = encode_chat_prompt(tiny_tokenizer(), single_user_message("Hello there"), {});
  EXPECT_EQ(r.json_body["usage"]["prompt_tokens"], prompt.size());
  EXPECT_EQ(r.json_body["usage"]["completion_tokens"], 12);
  EXPECT_EQ(r.json_body["usage"]["total_tokens"], prompt.size() + 12);
  EXPECT_GE(metric(s, "megamoe_generation_tokens_total"), 12);

  // Thinking on: the whole (markup-free) output is reasoning, content stays empty.
  const Expected think = expected_chat("Hello there", 10, true);
  const Reply t = post(s, "/v1/chat/completions",
                       chat_body("Hello there", 10, R"({"chat_template_kwargs": {"thinking": true}})"));
  ASSERT_EQ(t.status, 200) << t.body;
  EXPECT_EQ(t.json_body["choices"][0]["message"]["reasoning_content"], think.reasoning);
  EXPECT_EQ(t.json_body["choices"][0]["message"]["content"], think.content);
  const Reply effort = post(s, "/v1/chat/completions", chat_body("Hello there", 10, R"({"reasoning_effort": "high"})"));
  ASSERT_EQ(effort.status, 200) << effort.body;
  EXPECT_EQ(effort.json_body["choices"][0]["message"]["reasoning_content"], think.reasoning);
}

TEST(ServerHttp, StreamedTextEqualsNonStreamedText) {
  TestServer s;
  for (const std::string& sampling : {std::string(R"({"temperature": 0})"),
                                     std::string(R"({"temperature": 0.9, "top_p": 0.9, "top_k": 50, "seed": 7})")}) {
    const std::string body = chat_body("Once upon a time", 20, sampling);
    const Reply whole = post(s, "/v1/chat/completions", body);
    ASSERT_EQ(whole.status, 200) << whole.body;
    json stream_req = json::parse(body);
    stream_req["stream"] = true;
    stream_req["stream_options"] = {{"include_usage", true}};
    const Stream st = post_stream(s, "/v1/chat/completions", stream_req.dump());
    ASSERT_EQ(st.status, 200) << st.raw;
    const Streamed joined = join_chat_stream(st);
    EXPECT_TRUE(joined.done);
    ASSERT_FALSE(st.data.empty());
    EXPECT_EQ(st.data.back(), "[DONE]");
    EXPECT_EQ(joined.content, whole.json_body["choices"][0]["message"]["content"]) << sampling;
    EXPECT_EQ(joined.finish_reason, "length");
    EXPECT_EQ(joined.usage, whole.json_body["usage"]);
    EXPECT_GT(joined.chunks, 3);
    const json first = json::parse(st.data.front());
    EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  }
  // The same seed twice gives the same text; another seed (almost surely) not.
  const std::string seeded = chat_body("Once upon a time", 20, R"({"temperature": 1.0, "seed": 11})");
  const Reply a = post(s, "/v1/chat/completions", seeded), b = post(s, "/v1/chat/completions", seeded);
  EXPECT_EQ(a.json_body["choices"][0]["message"]["content"], b.json_body["choices"][0]["message"]["content"]);
}

const json& tiny_goldens() {
  static const json g = [] {
    std::ifstream in(kData + "/tiny-tokenizer/goldens.json");
    return json::parse(in);
  }();
  return g;
}

TEST(ServerHttp, CompletionsGiveTransformersGreedyText) {
  TestServer s;
  const auto& goldens = tiny_goldens()["generate"];
  ASSERT_GE(goldens.size(), 1u);
  for (const auto& g : goldens) {
    const auto ids = g["ids"].get<std::vector<int32_t>>();
    const json body = {{"prompt", g["prompt"]}, {"max_tokens", ids.size()}, {"temperature", 0}, {"ignore_eos", true}};
    const Reply r = post(s, "/v1/completions", body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.json_body["object"], "text_completion");
    EXPECT_EQ(r.json_body["choices"][0]["text"], g["text"]);
    EXPECT_EQ(r.json_body["usage"]["prompt_tokens"], g["prompt_ids"].size());
    // Token ids as the prompt give the same text; so does streaming.
    json by_ids = body;
    by_ids["prompt"] = g["prompt_ids"];
    EXPECT_EQ(post(s, "/v1/completions", by_ids.dump()).json_body["choices"][0]["text"], g["text"]);
    json streamed = body;
    streamed["stream"] = true;
    const Stream st = post_stream(s, "/v1/completions", streamed.dump());
    std::string text;
    for (const std::string& d : st.data) {
      if (d == "[DONE]") continue;
      text += json::parse(d)["choices"][0]["text"].get<std::string>();
    }
    EXPECT_EQ(text, g["text"]);
  }
}

TEST(ServerHttp, StopStringEndsTheReply) {
  TestServer s;
  const json& g = tiny_goldens()["generate"][0];
  const std::string full = g["text"];
  // Two ASCII letters well inside the golden text as the stop string.
  std::string stop;
  for (std::size_t p = 4; p + 1 < full.size() && stop.empty(); ++p) {
    if (std::isalpha(static_cast<unsigned char>(full[p])) && std::isalpha(static_cast<unsigned char>(full[p + 1]))) {
      stop = full.substr(p, 2);
    }
  }
  ASSERT_FALSE(stop.empty()) << full;
  const json body = {{"prompt", g["prompt"]}, {"max_tokens", g["ids"].size()}, {"temperature", 0},
                     {"ignore_eos", true},    {"stop", json::array({"never-there", stop})}};
  const Reply r = post(s, "/v1/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json_body["choices"][0]["text"], full.substr(0, full.find(stop)));
  EXPECT_EQ(r.json_body["choices"][0]["finish_reason"], "stop");
  EXPECT_LT(r.json_body["usage"]["completion_tokens"].get<int64_t>(), static_cast<int64_t>(g["ids"].size()));
  json stream = body;
  stream["stream"] = true;
  stream["stop"] = stop;
  std::string text;
  std::string finish;
  for (const std::string& d : post_stream(s, "/v1/completions", stream.dump()).data) {
    if (d == "[DONE]") continue;
    const json c = json::parse(d);
    text += c["choices"][0]["text"].get<std::string>();
    if (!c["choices"][0]["finish_reason"].is_null()) finish = c["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, full.substr(0, full.find(stop)));
  EXPECT_EQ(finish, "stop");
}

TEST(ServerHttp, Logprobs) {
  TestServer s;
  const Reply r = post(s, "/v1/chat/completions", chat_body("Hi", 6, R"({"logprobs": true, "top_logprobs": 3})"));
  ASSERT_EQ(r.status, 200) << r.body;
  const json& content = r.json_body["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 6u);
  std::string joined;
  for (const json& t : content) {
    ASSERT_EQ(t["top_logprobs"].size(), 3u);
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
    // Greedy: the chosen token is the most likely one.
    EXPECT_EQ(t["token"], t["top_logprobs"][0]["token"]);
    EXPECT_FLOAT_EQ(t["logprob"].get<float>(), t["top_logprobs"][0]["logprob"].get<float>());
    EXPECT_GE(t["top_logprobs"][0]["logprob"].get<double>(), t["top_logprobs"][1]["logprob"].get<double>());
    joined += t["token"].get<std::string>();
  }
  EXPECT_EQ(joined, r.json_body["choices"][0]["message"]["content"]);
  const Reply c = post(s, "/v1/completions", R"({"prompt": "Hello", "max_tokens": 4, "logprobs": 2, "temperature": 0})");
  ASSERT_EQ(c.status, 200) << c.body;
  const json& lp = c.json_body["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"].size(), 4u);
  EXPECT_EQ(lp["token_logprobs"].size(), 4u);
  EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
  // Streamed logprobs cover every token too.
  const Stream st = post_stream(s, "/v1/chat/completions",
                                chat_body("Hi", 6, R"({"logprobs": true, "stream": true})"));
  std::size_t n = 0;
  for (const std::string& d : st.data) {
    if (d == "[DONE]") continue;
    const json ch = json::parse(d);
    if (!ch["choices"].empty() && ch["choices"][0]["logprobs"].is_object()) n += ch["choices"][0]["logprobs"]["content"].size();
  }
  EXPECT_EQ(n, 6u);
}

// 16 streaming clients at once, prompts of different lengths chunked at 3
// tokens per step so prefill chunks and decodes mix: every reply equals the
// same request sent alone.
TEST(ServerHttp, ConcurrentStreamsEqualSequentialReplies) {
  ServerOptions o;
  o.max_batch = 16;
  o.prefill_chunk = 3;
  TestServer s(o);
  constexpr int kClients = 16;
  std::vector<std::string> bodies;
  for (int i = 0; i < kClients; ++i) {
    std::string user = "Client " + std::to_string(i) + " says";
    for (int k = 0; k < i % 5; ++k) user += " more words";
    const std::string sampling = i % 2 ? R"({"stream": true})" : R"({"stream": true, "temperature": 0.8, "seed": )" + std::to_string(100 + i) + "}";
    bodies.push_back(chat_body(user, 16 + i, sampling));
  }
  std::vector<Streamed> alone(kClients), together(kClients);
  for (int i = 0; i < kClients; ++i) alone[i] = join_chat_stream(post_stream(s, "/v1/chat/completions", bodies[i]));
  std::vector<std::thread> threads;
  std::atomic<int> go{0};
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      ++go;
      while (go.load() < kClients) std::this_thread::yield();
      const Stream st = post_stream(s, "/v1/chat/completions", bodies[i]);
      EXPECT_EQ(st.status, 200) << "client " << i << ": " << st.error << " " << st.raw;
      together[i] = join_chat_stream(st);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kClients; ++i) {
    EXPECT_TRUE(together[i].done) << i;
    EXPECT_FALSE(alone[i].content.empty()) << i;
    EXPECT_EQ(together[i].content, alone[i].content) << "client " << i;
    EXPECT_EQ(together[i].finish_reason, "length");
  }
  EXPECT_TRUE(eventually([&] { return metric(s, "megamoe_state_slots_in_use") == 0; }));
}

TEST(ServerHttp, DisconnectMidStreamFreesTheSlot) {
  ServerOptions o;
  o.max_batch = 2;
  TestServer s(o);
  const Stream st = post_stream(s, "/v1/chat/completions", chat_body("Tell me a long story", 3500, R"({"stream": true})"), 3);
  EXPECT_EQ(st.data.size(), 3u);
  EXPECT_TRUE(eventually([&] { return metric(s, "megamoe_state_slots_in_use") == 0; }, std::chrono::seconds(5)));
  EXPECT_EQ(metric(s, "megamoe_requests_running"), 0);
  // (counted when the handler has seen the end, a moment after the slot is free)
  EXPECT_TRUE(eventually([&] { return metric(s, "megamoe_requests_finished_total{finish_reason=\"cancelled\"}") == 1; }));
  EXPECT_LT(metric(s, "megamoe_generation_tokens_total"), 3000) << "the cancelled request stopped early";

  // A non-streamed request whose client gives up is cancelled as well (a
  // slow scripted engine: 10 ms a step, so the request would take 30 s).
  ScriptEngine slow({5}, std::chrono::milliseconds(10));
  ServerOptions so;
  so.prefill_chunk = kContext;
  TestServer s2(so, &slow);
  httplib::Client c = s2.client();
  c.set_read_timeout(0, 200000);  // gives up after 0.2 s
  const auto r = c.Post("/v1/chat/completions", chat_body("Another long story", 3000), "application/json");
  EXPECT_FALSE(r) << "the client timed out";
  EXPECT_TRUE(eventually([&] { return metric(s2, "megamoe_state_slots_in_use") == 0; }, std::chrono::seconds(5)));
  EXPECT_TRUE(eventually([&] { return metric(s2, "megamoe_requests_finished_total{finish_reason=\"cancelled\"}") == 1; }));
  EXPECT_LT(metric(s2, "megamoe_generation_tokens_total"), 1000);
  // The server still answers.
  EXPECT_EQ(post(s, "/v1/chat/completions", chat_body("Hi", 3)).status, 200);
}

TEST(ServerHttp, FullQueueAnswers503WithRetryAfter) {
  ScriptEngine slow({5}, std::chrono::milliseconds(5));
  ServerOptions o;
  o.max_batch = 1;
  o.max_queue = 0;
  o.prefill_chunk = kContext;
  TestServer s(o, &slow);
  std::thread long_one([&] {
    post_stream(s, "/v1/chat/completions", chat_body("Long", 3000, R"({"stream": true})"), 20);
  });
  ASSERT_TRUE(eventually([&] { return metric(s, "megamoe_requests_running") == 1; }));
  const Reply r = post(s, "/v1/chat/completions", chat_body("Hi", 3));
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(r.json_body["error"]["code"], "queue_full") << r.body;
  EXPECT_TRUE(r.headers.count("Retry-After"));
  long_one.join();
  EXPECT_TRUE(eventually([&] { return post(s, "/v1/chat/completions", chat_body("Hi", 3)).status == 200; }));
}

TEST(ServerHttp, RequestsPastTheContextAreRejectedBeforeWork) {
  TestServer s;
  const Reply r = post(s, "/v1/chat/completions", chat_body("Hi", static_cast<int>(kContext)));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.json_body["error"]["code"], "context_length_exceeded");
  EXPECT_NE(r.json_body["error"]["message"].get<std::string>().find("4096"), std::string::npos);
  std::string long_prompt;
  for (int i = 0; i < 3000; ++i) long_prompt += "ab ";
  const Reply p = post(s, "/v1/completions", json{{"prompt", long_prompt}, {"max_tokens", 16}}.dump());
  EXPECT_EQ(p.status, 400) << p.body;
  EXPECT_EQ(p.json_body["error"]["code"], "context_length_exceeded");
  EXPECT_EQ(metric(s, "megamoe_prompt_tokens_total"), 0) << "no work was done";
}

TEST(ServerHttp, BadRequestsGetOpenAiErrors) {
  ServerOptions o;
  o.max_body_bytes = 64 * 1024;
  TestServer s(o);
  struct Case {
    std::string body, param, needle;
  };
  const std::vector<Case> cases = {
      {"{not json", "", "not valid JSON"},
      {"[1, 2]", "", "must be a JSON object"},
      {"{}", "messages", "messages is missing"},
      {R"({"messages": []})", "messages", "must not be empty"},
      {R"({"messages": "hi"})", "messages", "must be an array"},
      {R"({"messages": [{"role": "wizard", "content": "x"}]})", "messages[0].role", "wizard"},
      {R"({"messages": [{"content": "x"}]})", "messages[0].role", "missing"},
      {R"({"messages": [{"role": "user"}]})", "messages[0].content", "missing"},
      {R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content", "must be a string"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", "messages[0].content[0].type", "image_url"},
      {R"({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"})", "temperature", "must be a number"},
      {R"({"messages": [{"role": "user", "content": "x"}], "temperature": 3})", "temperature", "[0, 2]"},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_p": 0})", "top_p", "top_p"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1})", "max_tokens", "max_tokens"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0})", "max_tokens", "max_tokens"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5})", "max_tokens", "integer"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1e300})", "max_tokens", "integer"},
      {R"({"messages": [{"role": "user", "content": "x"}], "n": 0})", "n", "[1, 16]"},
      {R"({"messages": [{"role": "user", "content": "x"}], "n": true})", "n", "integer"},
      {R"({"messages": [{"role": "user", "content": "x"}], "best_of": 2})", "best_of", "not supported"},
      {R"({"messages": [{"role": "user", "content": "x"}], "presence_penalty": 2.5})", "presence_penalty", "[-2, 2]"},
      {R"({"messages": [{"role": "user", "content": "x"}], "frequency_penalty": "lots"})", "frequency_penalty", "a number"},
      {R"({"messages": [{"role": "user", "content": "x"}], "repetition_penalty": 0})", "repetition_penalty", "(0, 10]"},
      {R"({"messages": [{"role": "user", "content": "x"}], "min_p": 1.5})", "min_p", "[0, 1]"},
      {R"({"messages": [{"role": "user", "content": "x"}], "min_tokens": -1})", "min_tokens", "min_tokens"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stop_token_ids": 5})", "stop_token_ids", "an array"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stop_token_ids": [5, -1]})", "stop_token_ids", "stop_token_ids[1]"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stop_token_ids": [1.5]})", "stop_token_ids", "not a token id"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logit_bias": [5]})", "logit_bias", "an object"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"abc": 1}})", "logit_bias", "not a token id"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"-5": 1}})", "logit_bias", "not a token id"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"99999999": 1}})", "logit_bias", "not a token id"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"5": 101}})", "logit_bias", "[-100, 100]"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"5": "up"}})", "logit_bias.5", "a number"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"5": 1, "05": 2}})", "logit_bias", "twice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})", "response_format", "not supported"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})", "tool_choice", "required"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})", "tools[0].function", "function"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stop": [""]})", "stop", "empty"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stop": 5})", "stop", "string"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stream": "yes"})", "stream", "boolean"},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3})", "top_logprobs", "logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "extreme"})", "reasoning_effort", "extreme"},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}", "", "not valid JSON"},
  };
  for (const Case& c : cases) {
    const Reply r = post(s, "/v1/chat/completions", c.body);
    EXPECT_EQ(r.status, 400) << c.body << " -> " << r.body;
    ASSERT_TRUE(r.json_body.contains("error")) << r.body;
    const json& e = r.json_body["error"];
    EXPECT_EQ(e["type"], "invalid_request_error") << r.body;
    EXPECT_EQ(e["param"], c.param.empty() ? json() : json(c.param)) << c.body << " -> " << r.body;
    EXPECT_NE(e["message"].get<std::string>().find(c.needle), std::string::npos) << c.body << " -> " << r.body;
    EXPECT_TRUE(e.contains("code"));
  }
  const Reply completions = post(s, "/v1/completions", R"({"prompt": ["a", "b"]})");
  EXPECT_EQ(completions.status, 400);
  EXPECT_EQ(completions.json_body["error"]["param"], "prompt");
  EXPECT_EQ(post(s, "/v1/completions", R"({"prompt": "a", "echo": true})").json_body["error"]["param"], "echo");
  EXPECT_EQ(post(s, "/v1/completions", R"({"prompt": [100000]})").status, 400);

  const Reply big = post(s, "/v1/chat/completions", std::string(100 * 1024, ' '));
  EXPECT_EQ(big.status, 413);
  EXPECT_TRUE(big.json_body["error"].is_object()) << big.body;
  EXPECT_EQ(get(s, "/health").status, 200);
}

TEST(ServerHttp, ApiKey) {
  ServerOptions o;
  o.api_key = "sekret";
  TestServer s(o);
  const Reply none = post(s, "/v1/chat/completions", chat_body("Hi", 2));
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.json_body["error"]["type"], "authentication_error");
  EXPECT_EQ(post(s, "/v1/chat/completions", chat_body("Hi", 2), {{"Authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(get(s, "/v1/models").status, 401);
  EXPECT_EQ(post(s, "/v1/chat/completions", chat_body("Hi", 2), {{"Authorization", "Bearer sekret"}}).status, 200);
  EXPECT_EQ(get(s, "/v1/models", {{"Authorization", "Bearer sekret"}}).status, 200);
  const std::string msg = R"({"max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]})";
  const Reply anthropic = post(s, "/v1/messages", msg);
  EXPECT_EQ(anthropic.status, 401);
  EXPECT_EQ(anthropic.json_body["type"], "error");
  EXPECT_EQ(anthropic.json_body["error"]["type"], "authentication_error");
  EXPECT_EQ(post(s, "/v1/messages", msg, {{"x-api-key", "sekret"}}).status, 200);
  EXPECT_EQ(get(s, "/health").status, 200) << "health needs no key";
}

TEST(ServerHttp, AnthropicMessagesText) {
  TestServer s;
  const Expected want = expected_chat("Hello there", 8);
  const std::string body =
      R"({"model": "x", "max_tokens": 8, "temperature": 0, "ignore_eos": true, "messages": [{"role": "user", "content": "Hello there"}]})";
  const Reply r = post(s, "/v1/messages", body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json_body["type"], "message");
  EXPECT_EQ(r.json_body["role"], "assistant");
  EXPECT_EQ(r.json_body["stop_reason"], "max_tokens");
  EXPECT_EQ(r.json_body["usage"]["output_tokens"], 8);
  ASSERT_EQ(r.json_body["content"].size(), 1u);
  EXPECT_EQ(r.json_body["content"][0]["type"], "text");
  EXPECT_EQ(r.json_body["content"][0]["text"], want.content);

  json stream = json::parse(body);
  stream["stream"] = true;
  const Stream st = post_stream(s, "/v1/messages", stream.dump());
  ASSERT_EQ(st.status, 200);
  ASSERT_GE(st.events.size(), 5u);
  EXPECT_EQ(st.events.front(), "message_start");
  EXPECT_EQ(st.events.back(), "message_stop");
  std::string text;
  for (std::size_t i = 0; i < st.data.size(); ++i) {
    const json e = json::parse(st.data[i]);
    EXPECT_EQ(e["type"], st.events[i]);
    if (e["type"] == "content_block_delta") text += e["delta"]["text"].get<std::string>();
    if (e["type"] == "message_delta") {
      EXPECT_EQ(e["delta"]["stop_reason"], "max_tokens");
    }
  }
  EXPECT_EQ(text, want.content);
  const Reply count = post(s, "/v1/messages/count_tokens", R"({"messages": [{"role": "user", "content": "Hello there"}]})");
  ASSERT_EQ(count.status, 200) << count.body;
  EXPECT_EQ(count.json_body["input_tokens"], r.json_body["usage"]["input_tokens"]);
  const Reply bad = post(s, "/v1/messages", R"({"messages": [{"role": "user", "content": "Hi"}]})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.json_body["type"], "error");
  EXPECT_NE(bad.json_body["error"]["message"].get<std::string>().find("max_tokens"), std::string::npos);
}

// Tools and tool results go through the official encoding: the prompt the
// server ran has exactly the tokens of encode_chat with the tools attached.
TEST(ServerHttp, ToolsReachThePromptThroughTheChatEncoding) {
  TestServer s;
  const json tools = json::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "description": "Weather of a city", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])");
  const json messages = json::parse(R"([{"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}])");
  const json body = {{"messages", messages}, {"tools", tools}, {"max_tokens", 4}, {"temperature", 0}, {"ignore_eos", true}};
  const Reply r = post(s, "/v1/chat/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const std::vector<int32_t> prompt =
      encode_chat_prompt(tiny_tokenizer(), text::attach_tools(messages, tools), text::ChatOptions{});
  EXPECT_EQ(r.json_body["usage"]["prompt_tokens"], prompt.size());
  json none = body;
  none["tool_choice"] = "none";
  const Reply n = post(s, "/v1/chat/completions", none.dump());
  ASSERT_EQ(n.status, 200) << n.body;
  EXPECT_EQ(n.json_body["usage"]["prompt_tokens"], encode_chat_prompt(tiny_tokenizer(), messages, {}).size());
}

TEST(ServerHttp, ShutdownEndsRunningStreamsCleanly) {
  ScriptEngine slow({5}, std::chrono::milliseconds(5));
  ServerOptions o;
  o.prefill_chunk = kContext;
  auto s = std::make_unique<TestServer>(o, &slow);
  Stream st;
  std::thread client([&] { st = post_stream(*s, "/v1/chat/completions", chat_body("Long", 3500, R"({"stream": true})")); });
  ASSERT_TRUE(eventually([&] { return metric(*s, "megamoe_requests_running") == 1; }));
  s->server().shutdown(std::chrono::milliseconds(0));
  client.join();
  ASSERT_FALSE(st.data.empty());
  EXPECT_EQ(st.data.back(), "[DONE]");
  EXPECT_TRUE(json::parse(st.data[st.data.size() - 2]).contains("error"));
}

}  // namespace
}  // namespace megamoe::server::testing
