// Reply formatting through the HTTP layer with a scripted engine that emits a
// fixed completion (reasoning, answer, DSML tool calls): tool_calls with JSON
// string arguments, reasoning_content, finish_reason tool_calls, no markup
// anywhere, streamed or not, OpenAI and Anthropic shapes.
#include <gtest/gtest.h>

#include "server_test_util.hpp"

namespace megamoe::server::testing {
namespace {

constexpr int32_t kEos = 1;

std::vector<int32_t> script_of(const std::string& text, bool eos = true) {
  std::vector<int32_t> ids = tiny_tokenizer().encode(text);
  if (eos) ids.push_back(kEos);
  return ids;
}

const std::string kToolText =
    "The user wants weather.</think>Let me check.\n\n<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"get_weather\">\n"
    "<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n"
    "<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"get_time\">\n"
    "<｜DSML｜parameter name=\"zone\" string=\"true\">CET</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>";

const char* kTools = R"([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
    "properties": {"zone": {"type": "string"}}}}}])";

ServerOptions big_chunks() {
  ServerOptions o;
  o.prefill_chunk = kContext;  // the script engine counts steps: the prompt is one step
  return o;
}

std::string tool_request(bool stream) {
  json body = {{"messages", json::array({json{{"role", "user"}, {"content", "Weather in Paris?"}}})},
               {"tools", json::parse(kTools)},
               {"max_tokens", 400},
               {"chat_template_kwargs", {{"thinking", true}}},
               {"stream", stream}};
  return body.dump();
}

void expect_no_markup(const std::string& s) {
  for (const char* marker : {"DSML", "</think>", "<think>", "<｜", "｜>"}) {
    EXPECT_EQ(s.find(marker), std::string::npos) << marker << " in " << s;
  }
}

TEST(ServerFormat, ToolCallsAndReasoning) {
  ScriptEngine engine(script_of(kToolText));
  TestServer s(big_chunks(), &engine);
  const Reply r = post(s, "/v1/chat/completions", tool_request(false));
  ASSERT_EQ(r.status, 200) << r.body;
  const json& choice = r.json_body["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_EQ(choice["message"]["reasoning_content"], "The user wants weather.");
  EXPECT_EQ(choice["message"]["content"], "Let me check.");
  const json& calls = choice["message"]["tool_calls"];
  ASSERT_EQ(calls.size(), 2u) << r.body;
  EXPECT_EQ(calls[0]["type"], "function");
  EXPECT_EQ(calls[0]["function"]["name"], "get_weather");
  ASSERT_TRUE(calls[0]["function"]["arguments"].is_string());
  EXPECT_EQ(json::parse(calls[0]["function"]["arguments"].get<std::string>()), json::parse(R"({"city": "Paris", "days": 3})"));
  EXPECT_EQ(json::parse(calls[1]["function"]["arguments"].get<std::string>()), json::parse(R"({"zone": "CET"})"));
  EXPECT_NE(calls[0]["id"], calls[1]["id"]);
  EXPECT_EQ(calls[0]["id"].get<std::string>().rfind("call_", 0), 0u);
  expect_no_markup(r.body);

  const Stream st = post_stream(s, "/v1/chat/completions", tool_request(true));
  std::string reasoning, content, finish;
  std::vector<json> stream_calls;  // each call's first delta, its arguments joined from the later ones
  for (const std::string& d : st.data) {
    if (d == "[DONE]") continue;
    const json c = json::parse(d);
    const json& delta = c["choices"][0]["delta"];
    if (delta.contains("reasoning_content")) reasoning += delta["reasoning_content"].get<std::string>();
    if (delta.contains("content")) content += delta["content"].get<std::string>();
    if (delta.contains("tool_calls")) {
      for (const json& t : delta["tool_calls"]) {
        const auto index = t["index"].get<std::size_t>();
        if (t.contains("id")) {
          ASSERT_EQ(index, stream_calls.size()) << d;
          stream_calls.push_back(t);
          continue;
        }
        ASSERT_LT(index, stream_calls.size()) << d;
        json& args = stream_calls[index]["function"]["arguments"];
        args = args.get<std::string>() + t["function"]["arguments"].get<std::string>();
      }
    }
    if (!c["choices"][0]["finish_reason"].is_null()) finish = c["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(reasoning, "The user wants weather.");
  EXPECT_EQ(content, "Let me check.");
  EXPECT_EQ(finish, "tool_calls");
  ASSERT_EQ(stream_calls.size(), 2u);
  EXPECT_EQ(stream_calls[0]["index"], 0);
  EXPECT_EQ(stream_calls[1]["index"], 1);
  EXPECT_EQ(stream_calls[1]["function"]["name"], "get_time");
  EXPECT_EQ(stream_calls[0]["function"]["arguments"], calls[0]["function"]["arguments"]);
  EXPECT_EQ(stream_calls[1]["function"]["arguments"], calls[1]["function"]["arguments"]);
  expect_no_markup(st.raw);
}

TEST(ServerFormat, AnthropicToolUseAndThinking) {
  ScriptEngine engine(script_of(kToolText));
  TestServer s(big_chunks(), &engine);
  json body = {{"model", "claude-whatever"},
               {"max_tokens", 400},
               {"thinking", {{"type", "enabled"}, {"budget_tokens", 1024}}},
               {"system", "Be brief."},
               {"tools", json::parse(R"([{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}},
                                         {"name": "get_time", "input_schema": {"type": "object"}}])")},
               {"messages", json::array({json{{"role", "user"}, {"content", "Weather in Paris?"}}})}};
  const Reply r = post(s, "/v1/messages", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json_body["stop_reason"], "tool_use");
  const json& content = r.json_body["content"];
  ASSERT_EQ(content.size(), 4u) << r.body;
  EXPECT_EQ(content[0]["type"], "thinking");
  EXPECT_EQ(content[0]["thinking"], "The user wants weather.");
  EXPECT_EQ(content[1]["type"], "text");
  EXPECT_EQ(content[1]["text"], "Let me check.");
  EXPECT_EQ(content[2]["type"], "tool_use");
  EXPECT_EQ(content[2]["name"], "get_weather");
  EXPECT_EQ(content[2]["input"], json::parse(R"({"city": "Paris", "days": 3})"));
  EXPECT_EQ(content[3]["input"], json::parse(R"({"zone": "CET"})"));

  body["stream"] = true;
  const Stream st = post_stream(s, "/v1/messages", body.dump());
  std::vector<std::string> block_types;
  std::string thinking, text, partial;
  std::string stop;
  for (std::size_t i = 0; i < st.data.size(); ++i) {
    const json e = json::parse(st.data[i]);
    if (e["type"] == "content_block_start") block_types.push_back(e["content_block"]["type"]);
    if (e["type"] == "content_block_delta") {
      const json& d = e["delta"];
      if (d["type"] == "thinking_delta") thinking += d["thinking"].get<std::string>();
      if (d["type"] == "text_delta") text += d["text"].get<std::string>();
      if (d["type"] == "input_json_delta") partial += d["partial_json"].get<std::string>();
    }
    if (e["type"] == "message_delta") stop = e["delta"]["stop_reason"];
  }
  EXPECT_EQ(block_types, (std::vector<std::string>{"thinking", "text", "tool_use", "tool_use"}));
  EXPECT_EQ(thinking, "The user wants weather.");
  EXPECT_EQ(text, "Let me check.");
  EXPECT_EQ(stop, "tool_use");
  EXPECT_EQ(partial, R"({"city": "Paris", "days": 3}{"zone": "CET"})");
  expect_no_markup(st.raw);

  // A conversation with the tool result goes back in (tool_use / tool_result blocks).
  json follow = body;
  follow["stream"] = false;
  follow["messages"].push_back(json{{"role", "assistant"},
                                    {"content", json::array({json{{"type", "thinking"}, {"thinking", "t"}},
                                                             json{{"type", "tool_use"}, {"id", "toolu_1"},
                                                                  {"name", "get_weather"}, {"input", {{"city", "Paris"}}}}})}});
  follow["messages"].push_back(json{{"role", "user"},
                                    {"content", json::array({json{{"type", "tool_result"}, {"tool_use_id", "toolu_1"},
                                                                  {"content", "sunny"}}})}});
  EXPECT_EQ(post(s, "/v1/messages", follow.dump()).status, 200);
}

// Cut off inside a tool-call block (max_tokens): the unfinished block is
// dropped, never shown as content, and the reply says length.
TEST(ServerFormat, UnfinishedToolCallNeverLeaks) {
  ScriptEngine engine(script_of(kToolText));
  TestServer s(big_chunks(), &engine);
  const std::size_t cut = tiny_tokenizer().encode(kToolText).size() - 12;
  json body = json::parse(tool_request(false));
  body["max_tokens"] = cut;
  const Reply r = post(s, "/v1/chat/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json_body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r.json_body["choices"][0]["message"]["content"], "Let me check.");
  expect_no_markup(r.body);
}

// Thinking on and no </think> ever: everything is reasoning (the prompt opened it).
TEST(ServerFormat, ReasoningWithoutClosingTag) {
  ScriptEngine engine(script_of("Just thinking out loud"));
  TestServer s(big_chunks(), &engine);
  json body = json::parse(tool_request(false));
  body.erase("tools");
  const Reply r = post(s, "/v1/chat/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json_body["choices"][0]["message"]["reasoning_content"], "Just thinking out loud");
  EXPECT_EQ(r.json_body["choices"][0]["message"]["content"], "");
  EXPECT_EQ(r.json_body["choices"][0]["finish_reason"], "stop");
}

}  // namespace
}  // namespace megamoe::server::testing
