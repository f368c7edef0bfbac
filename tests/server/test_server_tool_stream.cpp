// Tool-call arguments streamed as they are generated, through the HTTP layer
// with a scripted engine that takes a little time per token: OpenAI's first
// tool_calls delta per call (index, id, type, name, arguments ""), then
// argument fragments carrying only index and function.arguments; Anthropic's
// tool_use content_block_start (input {}) then input_json_delta events. The
// fragments join to exactly the non-streamed arguments; a malformed block
// still ends the stream cleanly.
#include <gtest/gtest.h>

#include "server_test_util.hpp"

namespace megamoe::server::testing {
namespace {

constexpr int32_t kEos = 1;

std::vector<int32_t> script_of(const std::string& text) {
  std::vector<int32_t> ids = tiny_tokenizer().encode(text);
  ids.push_back(kEos);
  return ids;
}

std::string long_note() {
  std::string s;
  for (int i = 0; i < 10; ++i) s += "Line " + std::to_string(i) + ": \"quoted\" and more text.\n";
  return s;
}

const std::string kToolText =
    "Saving.\n\n<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"save_note\">\n"
    "<｜DSML｜parameter name=\"title\" string=\"true\">Notes</｜DSML｜parameter>\n"
    "<｜DSML｜parameter name=\"body\" string=\"true\">" + long_note() + "</｜DSML｜parameter>\n"
    "<｜DSML｜parameter name=\"tags\" string=\"false\">[\"a\", \"b\"]</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"get_time\">\n"
    "<｜DSML｜parameter name=\"zone\" string=\"true\">CET</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>";

const char* kTools = R"([{"type": "function", "function": {"name": "save_note", "parameters": {"type": "object",
    "properties": {"title": {"type": "string"}, "body": {"type": "string"}, "tags": {"type": "array"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
    "properties": {"zone": {"type": "string"}}}}}])";

ServerOptions big_chunks() {
  ServerOptions o;
  o.prefill_chunk = kContext;  // the script engine counts steps: the prompt is one step
  return o;
}

json chat_request(bool stream) {
  return json{{"messages", json::array({json{{"role", "user"}, {"content", "Save my notes."}}})},
              {"tools", json::parse(kTools)},
              {"max_tokens", 2000},
              {"stream", stream}};
}

json messages_request(bool stream) {
  return json{{"model", "claude-whatever"},
              {"max_tokens", 2000},
              {"tools", json::parse(R"([{"name": "save_note", "input_schema": {"type": "object"}},
                                        {"name": "get_time", "input_schema": {"type": "object"}}])")},
              {"messages", json::array({json{{"role", "user"}, {"content", "Save my notes."}}})},
              {"stream", stream}};
}

struct StreamedCall {
  json first;  // the delta that opened it
  std::string arguments;
  int fragments = 0;
};

// The tool_calls deltas of an OpenAI stream, checked for their shape on the way.
std::vector<StreamedCall> openai_calls(const Stream& st, std::string& finish) {
  std::vector<StreamedCall> calls;
  for (const std::string& d : st.data) {
    if (d == "[DONE]") continue;
    const json c = json::parse(d);
    const json& choice = c["choices"][0];
    if (!choice["finish_reason"].is_null()) finish = choice["finish_reason"];
    if (!choice["delta"].contains("tool_calls")) continue;
    for (const json& t : choice["delta"]["tool_calls"]) {
      const auto index = t["index"].get<std::size_t>();
      if (t.contains("id")) {
        EXPECT_EQ(index, calls.size()) << d;
        EXPECT_EQ(t["type"], "function") << d;
        EXPECT_EQ(t["function"]["arguments"], "") << d;
        EXPECT_TRUE(t["function"]["name"].is_string()) << d;
        calls.push_back(StreamedCall{t, "", 0});
        continue;
      }
      EXPECT_LT(index, calls.size()) << d;
      if (index >= calls.size()) continue;
      EXPECT_EQ(t.size(), 2u) << "a fragment carries only index and function: " << d;
      EXPECT_EQ(t["function"].size(), 1u) << d;
      calls[index].arguments += t["function"]["arguments"].get<std::string>();
      ++calls[index].fragments;
    }
  }
  return calls;
}

TEST(ServerToolStream, OpenAiArgumentsArriveInFragments) {
  ScriptEngine engine(script_of(kToolText), std::chrono::milliseconds(1));
  TestServer s(big_chunks(), &engine);
  const Reply whole = post(s, "/v1/chat/completions", chat_request(false).dump());
  ASSERT_EQ(whole.status, 200) << whole.body;
  const json& want = whole.json_body["choices"][0]["message"]["tool_calls"];
  ASSERT_EQ(want.size(), 2u) << whole.body;
  EXPECT_EQ(whole.json_body["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(json::parse(want[0]["function"]["arguments"].get<std::string>())["body"], long_note());

  const Stream st = post_stream(s, "/v1/chat/completions", chat_request(true).dump());
  ASSERT_EQ(st.status, 200) << st.raw;
  std::string finish;
  const std::vector<StreamedCall> calls = openai_calls(st, finish);
  EXPECT_EQ(finish, "tool_calls");
  ASSERT_EQ(calls.size(), 2u) << st.raw;
  EXPECT_EQ(calls[0].first["function"]["name"], "save_note");
  EXPECT_EQ(calls[1].first["function"]["name"], "get_time");
  EXPECT_NE(calls[0].first["id"], calls[1].first["id"]);
  EXPECT_EQ(calls[0].first["id"].get<std::string>().rfind("call_", 0), 0u);
  for (std::size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].arguments, want[i]["function"]["arguments"].get<std::string>()) << i;
  }
  EXPECT_GE(calls[0].fragments, 5) << "the long body should stream in pieces";
  EXPECT_EQ(st.data.back(), "[DONE]");
  EXPECT_EQ(st.raw.find("DSML"), std::string::npos);
}

TEST(ServerToolStream, AnthropicInputJsonDeltas) {
  ScriptEngine engine(script_of(kToolText), std::chrono::milliseconds(1));
  TestServer s(big_chunks(), &engine);
  const Reply whole = post(s, "/v1/messages", messages_request(false).dump());
  ASSERT_EQ(whole.status, 200) << whole.body;
  const json& content = whole.json_body["content"];
  ASSERT_EQ(content.size(), 3u) << whole.body;

  const Stream st = post_stream(s, "/v1/messages", messages_request(true).dump());
  ASSERT_EQ(st.status, 200) << st.raw;
  ASSERT_EQ(st.events.size(), st.data.size());
  struct Block {
    json start;
    std::string partial;
    int deltas = 0;
    bool stopped = false;
  };
  std::vector<Block> blocks;
  std::string stop_reason;
  for (std::size_t i = 0; i < st.data.size(); ++i) {
    const json e = json::parse(st.data[i]);
    EXPECT_EQ(e["type"], st.events[i]);
    if (e["type"] == "content_block_start") {
      EXPECT_EQ(e["index"], blocks.size());
      if (!blocks.empty()) EXPECT_TRUE(blocks.back().stopped) << "a block starts before the last one stopped";
      blocks.push_back(Block{e["content_block"], "", 0, false});
    } else if (e["type"] == "content_block_delta") {
      ASSERT_FALSE(blocks.empty());
      EXPECT_EQ(e["index"], blocks.size() - 1);
      if (e["delta"]["type"] == "input_json_delta") {
        EXPECT_EQ(blocks.back().start["type"], "tool_use");
        blocks.back().partial += e["delta"]["partial_json"].get<std::string>();
        ++blocks.back().deltas;
      }
    } else if (e["type"] == "content_block_stop") {
      ASSERT_FALSE(blocks.empty());
      EXPECT_EQ(e["index"], blocks.size() - 1);
      blocks.back().stopped = true;
    } else if (e["type"] == "message_delta") {
      stop_reason = e["delta"]["stop_reason"];
    }
  }
  EXPECT_EQ(st.events.back(), "message_stop");
  EXPECT_EQ(stop_reason, "tool_use");
  ASSERT_EQ(blocks.size(), 3u) << st.raw;
  EXPECT_EQ(blocks[0].start["type"], "text");
  for (std::size_t i = 1; i < 3; ++i) {
    const Block& b = blocks[i];
    EXPECT_TRUE(b.stopped);
    EXPECT_EQ(b.start["type"], "tool_use");
    EXPECT_EQ(b.start["name"], content[i]["name"]);
    EXPECT_EQ(b.start["input"], json::object());
    EXPECT_EQ(b.start["id"].get<std::string>().rfind("toolu_", 0), 0u);
    EXPECT_EQ(json::parse(b.partial), content[i]["input"]) << b.partial;
  }
  EXPECT_GE(blocks[1].deltas, 5);
}

// A call whose block turns out malformed: its start and fragments went out,
// then nothing more of it; the stream ends cleanly, and it says what the
// non-streamed reply says (no complete call: stop).
TEST(ServerToolStream, MalformedBlockEndsTheStreamCleanly) {
  const std::string text =
      "Trying.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"save_note\">\n"
      "<｜DSML｜parameter name=\"title\" string=\"true\">" + long_note() + "</｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"title\" string=\"true\">again</｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  ScriptEngine engine(script_of(text), std::chrono::milliseconds(1));
  TestServer s(big_chunks(), &engine);
  const Reply whole = post(s, "/v1/chat/completions", chat_request(false).dump());
  ASSERT_EQ(whole.status, 200) << whole.body;
  EXPECT_EQ(whole.json_body["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(whole.json_body["choices"][0]["message"].contains("tool_calls"));
  EXPECT_EQ(whole.json_body["choices"][0]["message"]["content"], "Trying.");

  const Stream st = post_stream(s, "/v1/chat/completions", chat_request(true).dump());
  std::string finish;
  const std::vector<StreamedCall> calls = openai_calls(st, finish);
  ASSERT_EQ(calls.size(), 1u) << st.raw;
  EXPECT_EQ(calls[0].arguments.rfind("{\"title\": \"Line 0", 0), 0u) << calls[0].arguments;
  EXPECT_FALSE(json::accept(calls[0].arguments));  // cut short: not to be used
  EXPECT_EQ(finish, "stop");
  EXPECT_EQ(st.data.back(), "[DONE]");

  const Stream an = post_stream(s, "/v1/messages", messages_request(true).dump());
  int starts = 0, stops = 0;
  for (const std::string& d : an.data) {
    const json e = json::parse(d);
    starts += e["type"] == "content_block_start";
    stops += e["type"] == "content_block_stop";
  }
  EXPECT_EQ(starts, 2);  // text, tool_use
  EXPECT_EQ(stops, 2);
  EXPECT_EQ(an.events.back(), "message_stop");
  EXPECT_EQ(an.raw.find("DSML"), std::string::npos);
}

}  // namespace
}  // namespace megamoe::server::testing
