// Tool calls streamed by ChatOutputParser: a kToolCallBegin, argument
// fragments, then kToolCallEnd. Whatever the split of the text into deltas
// (whole, at every byte, one byte at a time, random with fixed seeds) the
// fragments add up byte for byte to parse_completion's arguments, never split
// a UTF-8 character or an escape, and go out as soon as they are certain; a
// malformed block ends its open call with kToolCallAbort and the one-shot
// parser's error.
#include <random>
#include <string>
#include <vector>

#include "text/chat_encoding.hpp"
#include "text/chat_output.hpp"
#include "text_test_util.hpp"

namespace megamoe::text {
namespace {

using nlohmann::ordered_json;
using Kind = OutputEvent::Kind;

const std::string kEos = chat_tokens::kEos;
const std::string kBlockStart = "\n\n<｜DSML｜tool_calls>\n";
const std::string kBlockEnd = "</｜DSML｜tool_calls>";

std::string invoke(const std::string& name, const std::string& params) {
  return "<｜DSML｜invoke name=\"" + name + "\">\n" + params + "</｜DSML｜invoke>\n";
}
std::string param(const std::string& name, bool is_string, const std::string& value) {
  return "<｜DSML｜parameter name=\"" + name + "\" string=\"" + (is_string ? "true" : "false") + "\">" + value +
         "</｜DSML｜parameter>\n";
}

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

// Offsets of `json_text` that fall inside a string escape (after "\" or in "\uXXXX").
std::vector<bool> inside_escape(std::string_view json_text) {
  std::vector<bool> inside(json_text.size() + 1, false);
  bool in_string = false;
  int pending = 0;  // escape characters still to come
  for (std::size_t i = 0; i < json_text.size(); ++i) {
    inside[i] = pending > 0;
    const char c = json_text[i];
    if (pending > 0) {
      pending = (pending == 5 && c == 'u') ? 4 : pending == 5 ? 0 : pending - 1;
    } else if (in_string && c == '\\') {
      pending = 5;  // one character, or "u" and four hex digits
    } else if (c == '"') {
      in_string = !in_string;
    }
  }
  inside[json_text.size()] = pending > 0;
  return inside;
}

struct Streamed {
  std::string reasoning, content;
  std::vector<ToolCall> begun;                    // names, and the fragments joined
  std::vector<std::vector<std::string>> pieces;   // each call's fragments
  std::vector<ToolCall> ended;                    // kToolCallEnd's whole calls
  int aborted = 0;
  std::string error;
  bool truncated = false;
};

// Feeds `text` cut at `cuts` and checks the event protocol on the way.
Streamed stream(std::string_view text, bool thinking, const std::vector<std::size_t>& cuts) {
  ChatOutputParser parser(thinking);
  Streamed r;
  bool open = false;
  auto absorb = [&](const std::vector<OutputEvent>& events) {
    for (const OutputEvent& e : events) {
      switch (e.kind) {
        case Kind::kReasoning: r.reasoning += e.text; break;
        case Kind::kContent: r.content += e.text; break;
        case Kind::kToolCallBegin:
          EXPECT_FALSE(open) << "a call begins inside another";
          open = true;
          r.begun.push_back(ToolCall{e.tool_call.name, {}});
          r.pieces.emplace_back();
          break;
        case Kind::kToolCallArguments:
          ASSERT_TRUE(open) << "arguments outside a call";
          EXPECT_FALSE(e.text.empty());
          r.begun.back().arguments += e.text;
          r.pieces.back().push_back(e.text);
          break;
        case Kind::kToolCallEnd:
          ASSERT_TRUE(open) << "an end outside a call";
          open = false;
          EXPECT_EQ(e.tool_call.name, r.begun.back().name);
          EXPECT_EQ(e.tool_call.arguments, r.begun.back().arguments) << "the whole call differs from its fragments";
          r.ended.push_back(e.tool_call);
          break;
        case Kind::kToolCallAbort:
          ASSERT_TRUE(open) << "an abort outside a call";
          open = false;
          ++r.aborted;
          break;
        case Kind::kEnd: break;
      }
    }
  };
  std::size_t prev = 0;
  for (const std::size_t cut : cuts) {
    absorb(parser.feed(text.substr(prev, cut - prev)));
    prev = cut;
  }
  absorb(parser.feed(text.substr(prev)));
  absorb(parser.finish());
  EXPECT_FALSE(open) << "a call still open after finish()";
  r.error = parser.error();
  r.truncated = parser.truncated();
  return r;
}

// Whole, cut at each byte, one byte at a time, and random cuts (fixed seeds).
std::vector<std::vector<std::size_t>> splits_of(std::size_t size, bool every_single_cut = true) {
  std::vector<std::vector<std::size_t>> splits = {{}};
  std::vector<std::size_t> bytes;
  for (std::size_t cut = 1; cut < size; ++cut) {
    if (every_single_cut) splits.push_back({cut});
    bytes.push_back(cut);
  }
  splits.push_back(bytes);
  for (unsigned seed = 1; seed <= 20; ++seed) {
    std::mt19937 rng(seed);
    std::vector<std::size_t> cuts;
    for (std::size_t at = 1 + rng() % 12; at < size; at += 1 + rng() % (seed % 2 ? 6 : 40)) cuts.push_back(at);
    splits.push_back(cuts);
  }
  return splits;
}

// The fragments of a well-formed call: they join to the one-shot arguments,
// each is whole UTF-8, and none ends inside an escape.
void expect_clean_fragments(const Streamed& s, const ParsedCompletion& want, const std::string& label) {
  ASSERT_EQ(s.begun.size(), want.tool_calls.size()) << label;
  ASSERT_EQ(s.ended.size(), want.tool_calls.size()) << label;
  for (std::size_t i = 0; i < want.tool_calls.size(); ++i) {
    EXPECT_EQ(s.begun[i].name, want.tool_calls[i].name) << label;
    ASSERT_EQ(s.begun[i].arguments, want.tool_calls[i].arguments) << label;
    const std::string& args = want.tool_calls[i].arguments;
    const bool is_json = nlohmann::json::accept(args);
    const std::vector<bool> escape = inside_escape(args);
    std::size_t at = 0;
    for (const std::string& piece : s.pieces[i]) {
      EXPECT_TRUE(valid_utf8(piece)) << label << ": fragment splits a character: " << piece;
      at += piece.size();
      if (is_json) EXPECT_FALSE(escape[at]) << label << ": fragment ends inside an escape at " << at << " of " << args;
    }
  }
}

void expect_stream_equals_parse(const std::string& text, bool thinking, const std::string& label,
                                bool every_single_cut = true) {
  const ParsedCompletion want = parse_completion(text, thinking);
  ASSERT_TRUE(want.ok) << label << ": " << want.error;
  for (const auto& cuts : splits_of(text.size(), every_single_cut)) {
    const Streamed got = stream(text, thinking, cuts);
    EXPECT_EQ(got.reasoning, want.reasoning_content) << label;
    EXPECT_EQ(got.content, want.content) << label;
    EXPECT_TRUE(got.error.empty()) << label << ": " << got.error;
    EXPECT_FALSE(got.truncated) << label;
    EXPECT_EQ(got.aborted, 0) << label;
    expect_clean_fragments(got, want, label + " (" + std::to_string(cuts.size()) + " cuts)");
    if (::testing::Test::HasFailure()) return;
  }
}

const ordered_json& parse_goldens() {
  static const ordered_json g = [] {
    std::ifstream in(std::string(MEGAMOE_TEST_DATA_DIR) + "/text/chat_goldens.json", std::ios::binary);
    return ordered_json::parse(in)["parses"];
  }();
  return g;
}

TEST(ToolCallStream, EveryToolCallGoldenInEverySplit) {
  int with_calls = 0;
  for (const ordered_json& g : parse_goldens()) {
    if (!g["ok"].get<bool>()) continue;
    const std::string text = g["text"];
    expect_stream_equals_parse(text, g["thinking"], text);
    with_calls += !g["tool_calls"].empty();
  }
  EXPECT_GE(with_calls, 8);
}

// Values the goldens lack: non-ASCII (passed through unescaped, as
// ensure_ascii=False does), escapes, control bytes, "<" and near-markers.
TEST(ToolCallStream, HardValuesInEverySplit) {
  const std::string text =
      "Sure." + kBlockStart +
      invoke("write_file",
             param("path", true, "docs/中文/😀.md") +
                 param("content", true,
                       "line 1 \"quoted\" \\ back\nline 2\ttab \x01\x1f é 中 😀<b></i></｜DSML｜x <｜DSML｜parameter "
                       "</｜DSML｜tool_ </｜DSML｜invoke> a</b") +
                 param("mode", false, "{\"append\": true, \"n\": [1, 2.5, null], \"s\": \"中\\n\"}") +
                 param("a\"b", true, "<")) +
      invoke("noop", "") + invoke("f", param("x", true, "") + param("y", false, "-0.5")) + kBlockEnd + kEos;
  expect_stream_equals_parse(text, false, "hard values");
}

// Random well-formed blocks (fixed seed): names, string and raw values built
// from pieces that mix ASCII, escapes, multi-byte characters and near-markers.
TEST(ToolCallStream, RandomBlocksMatchTheOneShotParse) {
  const std::vector<std::string> pieces = {"a", "Z", " ", "\n", "\t", "\"", "\\", "<", "</", "</｜DSML｜", "<｜DSML｜parameter",
                                           "中", "😀", "é", "\x01", "\x1f", "/", "｜", "DSML", ">", "\r", "</｜DSML｜tool_calls"};
  const std::vector<std::string> raws = {"3", "-1.5", "true", "null", "[1, 2]", "{\"k\": \"v\"}", "\"中文\"", "[\"<\", {\"b\": null}]"};
  const std::vector<std::string> names = {"city", "q", "名字", "a\"b", "x_1"};
  std::mt19937 rng(20260601);
  for (int round = 0; round < 60; ++round) {
    std::string block;
    const int calls = 1 + static_cast<int>(rng() % 3);
    for (int c = 0; c < calls; ++c) {
      std::string params;
      std::vector<std::string> used = names;
      std::shuffle(used.begin(), used.end(), rng);
      const int n = static_cast<int>(rng() % 4);
      for (int k = 0; k < n; ++k) {
        std::string value;
        const bool is_string = rng() % 3 != 0;
        if (is_string) {
          for (int len = static_cast<int>(rng() % 30); len > 0; --len) value += pieces[rng() % pieces.size()];
          // A value can hold neither its own close nor the block's end.
          if (value.find("/｜DSML｜parameter") != std::string::npos || value.find(kBlockEnd) != std::string::npos) value = "v";
        } else {
          value = raws[rng() % raws.size()];
        }
        params += param(used[static_cast<std::size_t>(k)], is_string, value);
      }
      block += invoke(c % 2 ? "search" : "get_weather", params);
    }
    const bool thinking = rng() % 2;
    const std::string text = (thinking ? "Hm.</think>" : "") + std::string(rng() % 2 ? "Ok." : "") + kBlockStart + block +
                             kBlockEnd + kEos;
    expect_stream_equals_parse(text, thinking, "round " + std::to_string(round), /*every_single_cut=*/false);
    if (HasFailure()) return;
  }
}

// Fed one byte at a time, a value goes out as it arrives, less what may be
// the start of its close, an unfinished character or the block's end.
TEST(ToolCallStream, FragmentsGoOutAsSoonAsCertain) {
  ChatOutputParser parser(false);
  std::vector<OutputEvent> events;
  auto feed = [&](const std::string& t) {
    std::string args;
    for (const OutputEvent& e : parser.feed(t)) {
      events.push_back(e);
      if (e.kind == Kind::kToolCallArguments) args += e.text;
    }
    return args;
  };
  EXPECT_EQ(feed("Let me write." + kBlockStart + "<｜DSML｜invoke name=\"write\">\n"), "");
  EXPECT_TRUE(events.empty() || events.back().kind == Kind::kContent);  // the name is not certain yet
  EXPECT_EQ(feed("<｜DSML｜parameter"), "{");
  EXPECT_EQ(events[events.size() - 2].kind, Kind::kToolCallBegin);
  EXPECT_EQ(events[events.size() - 2].tool_call.name, "write");
  EXPECT_EQ(feed(" name=\"text\" string=\"tr"), "");
  EXPECT_EQ(feed("ue\">Hello"), "\"text\": \"Hello");
  EXPECT_EQ(feed(" \"w"), " \\\"w");
  EXPECT_EQ(feed("orld\"\n<"), "orld\\\"\\n");  // "<" may start the close
  EXPECT_EQ(feed("b>"), "<b>");                  // it did not
  EXPECT_EQ(feed("\xe4\xb8"), "");               // two bytes of 中
  EXPECT_EQ(feed("\xad</｜DSML｜par"), "中");
  EXPECT_EQ(feed("ameter>\n"), "\"");
  EXPECT_EQ(feed("<｜DSML｜parameter name=\"n\" string=\"false\">4"), ", \"n\": 4");
  EXPECT_EQ(feed("2</｜DSML｜parameter>\n</｜DSML｜invoke"), "2}");
  EXPECT_EQ(events.back().kind, Kind::kToolCallEnd);
  EXPECT_EQ(events.back().tool_call.arguments, "{\"text\": \"Hello \\\"world\\\"\\n<b>中\", \"n\": 42}");
  EXPECT_EQ(feed(">\n" + kBlockEnd + kEos), "");
  EXPECT_TRUE(parser.error().empty()) << parser.error();
}

// A long string value arrives in many fragments when it is generated in pieces.
TEST(ToolCallStream, LongValueStreamsInManyFragments) {
  std::string value;
  for (int i = 0; i < 200; ++i) value += "word" + std::to_string(i) + (i % 7 ? " " : "\n");
  const std::string text = kBlockStart + invoke("save", param("body", true, value)) + kBlockEnd + kEos;
  std::vector<std::size_t> cuts;
  for (std::size_t at = 3; at < text.size(); at += 3) cuts.push_back(at);
  const Streamed s = stream(text, false, cuts);
  ASSERT_EQ(s.ended.size(), 1u);
  EXPECT_GT(s.pieces[0].size(), value.size() / 4);
  EXPECT_EQ(s.begun[0].arguments, parse_completion(text, false).tool_calls[0].arguments);
}

// Malformed blocks: the calls before the fault stand, the open one is
// aborted, the error is the one-shot parser's, text after the block goes on.
TEST(ToolCallStream, MalformedBlocksAbortTheOpenCall) {
  struct Case {
    std::string block;  // between kBlockStart and kBlockEnd
    int ended;
    int aborted;
    std::string error_part;
  };
  const std::string good = invoke("f", param("a", true, "x"));
  const std::vector<Case> cases = {
      {good + invoke("g", param("a", true, "long value") + "oops" + param("b", true, "y")), 1, 1, "expected '>\\n' but got"},
      {good + invoke("g", param("a", true, "1") + param("a", true, "2")), 1, 1, "duplicate parameter name: 'a'"},
      {invoke("g", "<｜DSML｜parameter name=\"a\" string=\"maybe\">v</｜DSML｜parameter>\n"), 0, 1, "parameter format error"},
      {invoke("g", "<｜DSML｜parameter name=\"a\" string=\"true\">v/｜DSML｜parameter>\n"), 0, 1, "parameter format error"},
      {"<｜DSML｜invoke nam=\"f\">\n</｜DSML｜invoke>\n", 0, 0, "tool name format error"},
      {good + "junk" + good, 1, 0, "tool call format error"},
      {"<｜DSML｜invoke name=\"g\">\n<｜DSML｜parameter name=\"a\" string=\"true\">no close, the block ends\n", 0, 1,
       "parameter format error"},
  };
  for (const Case& c : cases) {
    const std::string body = c.block + kBlockEnd;
    const std::string text = "Hi." + kBlockStart + body + "after" + kEos;
    const ParsedCompletion ref = parse_completion("Hi." + kBlockStart + body, false);  // the block alone
    ASSERT_FALSE(ref.ok) << c.block;
    for (const auto& cuts : splits_of(text.size(), false)) {
      const Streamed s = stream(text, false, cuts);
      EXPECT_EQ(s.error, ref.error) << c.block;
      EXPECT_NE(s.error.find(c.error_part), std::string::npos) << s.error;
      EXPECT_EQ(static_cast<int>(s.ended.size()), c.ended) << c.block;
      EXPECT_EQ(s.aborted, c.aborted) << c.block;
      EXPECT_EQ(s.content, "Hi.after") << c.block;
      for (std::size_t i = 0; i < s.ended.size(); ++i) EXPECT_EQ(s.ended[i].arguments, ref.tool_calls[i].arguments);
      for (const ToolCall& call : s.begun) EXPECT_EQ(call.arguments.find("DSML"), std::string::npos) << call.arguments;
      if (HasFailure()) return;
    }
  }
}

// Cut off inside a value (max_tokens): the fragments so far went out, the call
// is aborted at finish(), truncated() says why, and nothing is an error.
TEST(ToolCallStream, CutOffInsideAValue) {
  const std::string text = kBlockStart + invoke("f", param("a", true, "x")) +
                           "<｜DSML｜invoke name=\"g\">\n<｜DSML｜parameter name=\"body\" string=\"true\">partial text</｜DSML｜para";
  for (const auto& cuts : splits_of(text.size(), false)) {
    const Streamed s = stream(text, false, cuts);
    ASSERT_EQ(s.ended.size(), 1u);
    ASSERT_EQ(s.begun.size(), 2u);
    EXPECT_EQ(s.begun[1].arguments, "{\"body\": \"partial text");
    EXPECT_EQ(s.aborted, 1);
    EXPECT_TRUE(s.truncated);
    EXPECT_TRUE(s.error.empty()) << s.error;
  }
}

// Mutated blocks: whatever the damage, the parser never crashes, keeps the
// event protocol, and ends the same calls with the same error as the one-shot
// parser on the block.
TEST(ToolCallStream, MutatedBlocksAgreeWithTheOneShotParse) {
  const std::string body = ">\n" + invoke("get_weather", param("city", true, "Paris \"中\"") + param("days", false, "3")) +
                           invoke("search", param("q", true, "a<b</c") + param("n", false, "[1, 2]")) + kBlockEnd;
  const std::vector<std::string> inserts = {"<", ">\n", "\"", "/｜DSML｜parameter", "<｜DSML｜parameter", "</｜DSML｜invoke",
                                            "<｜DSML｜invoke", kBlockEnd, "x", "中", " string=\"true\">"};
  std::mt19937 rng(7);
  int errors = 0;
  for (int round = 0; round < 400; ++round) {
    std::string b = body;
    for (int m = 1 + static_cast<int>(rng() % 2); m > 0; --m) {
      const std::size_t at = rng() % (b.size() + 1);
      if (rng() % 2) {
        b.insert(at, inserts[rng() % inserts.size()]);
      } else {
        b.erase(at, 1 + rng() % 6);
      }
    }
    const std::size_t end = b.find(kBlockEnd);
    const std::string text = "\n\n<｜DSML｜tool_calls" + b + kEos;
    std::vector<std::size_t> cuts;
    for (std::size_t at = 1 + rng() % 5; at < text.size(); at += 1 + rng() % 9) cuts.push_back(at);
    const Streamed s = stream(text, false, cuts);
    if (HasFailure()) return;
    if (end == std::string::npos) {
      EXPECT_TRUE(s.truncated) << b;
      continue;
    }
    const ParsedCompletion ref = parse_completion("\n\n<｜DSML｜tool_calls" + b.substr(0, end + kBlockEnd.size()), false);
    EXPECT_EQ(s.error, ref.error) << b;
    ASSERT_EQ(s.ended.size(), ref.tool_calls.size()) << b;
    for (std::size_t i = 0; i < s.ended.size(); ++i) {
      EXPECT_EQ(s.ended[i].name, ref.tool_calls[i].name) << b;
      EXPECT_EQ(s.ended[i].arguments, ref.tool_calls[i].arguments) << b;
    }
    EXPECT_EQ(static_cast<int>(s.begun.size()), static_cast<int>(s.ended.size()) + s.aborted) << b;
    errors += !ref.error.empty();
    if (HasFailure()) return;
  }
  EXPECT_GT(errors, 100);
}

}  // namespace
}  // namespace megamoe::text
