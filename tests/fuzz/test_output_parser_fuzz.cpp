// Mutation fuzz of the streaming output parser (built with ASan + UBSan):
// 10,000 mutated completions with tool-call blocks, fed to ChatOutputParser
// in random deltas. Every one must keep the event protocol (a call begins,
// gets argument pieces, then ends or is aborted; a whole call is its pieces
// joined; pieces are whole UTF-8 when the text is) and, where the text is one
// complete block, end the same calls with the same error as parse_completion
// on that block. Deterministic seed; a failing case prints its text.
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "text/chat_encoding.hpp"
#include "text/chat_output.hpp"

namespace megamoe::text {
namespace {

using Kind = OutputEvent::Kind;

const std::string kStart = "\n\n<｜DSML｜tool_calls";
const std::string kEnd = "</｜DSML｜tool_calls>";

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

std::vector<std::string> seeds() {
  const std::string p = "<｜DSML｜parameter name=\"";
  const std::string c = "</｜DSML｜parameter>\n";
  return {
      ">\n<｜DSML｜invoke name=\"get_weather\">\n" + p + "city\" string=\"true\">Paris \"中\" 😀\\n" + c + p +
          "days\" string=\"false\">3" + c + "</｜DSML｜invoke>\n<｜DSML｜invoke name=\"f\">\n</｜DSML｜invoke>\n" + kEnd,
      ">\n<｜DSML｜invoke name=\"search\">\n" + p + "q\" string=\"true\">a<b</c\x01\t" + c + p +
          "filters\" string=\"false\">{\"lang\": \"e\\u00e9n\", \"n\": [1, 2.5]}" + c + "</｜DSML｜invoke>\n" + kEnd,
  };
}

TEST(OutputParserFuzz, MutatedToolCallBlocks) {
  const std::vector<std::string> inserts = {"<", ">\n", "\"", "\\", "/｜DSML｜parameter", "<｜DSML｜parameter", "</｜DSML｜invoke",
                                            "<｜DSML｜invoke name=\"g\">\n", kEnd, kStart, "x", "中", "\xe4", " string=\"false\">",
                                            chat_tokens::kEos, chat_tokens::kThinkEnd};
  const std::vector<std::string> bodies = seeds();
  std::mt19937 rng(424242);
  int compared = 0;
  for (int round = 0; round < 10000; ++round) {
    std::string body = bodies[rng() % bodies.size()];
    for (int m = 1 + static_cast<int>(rng() % 3); m > 0; --m) {
      const std::size_t at = rng() % (body.size() + 1);
      if (rng() % 2) {
        body.insert(at, inserts[rng() % inserts.size()]);
      } else {
        body.erase(at, 1 + rng() % 8);
      }
    }
    const std::string text = "Hi." + kStart + body + (rng() % 2 ? chat_tokens::kEos : "");
    ChatOutputParser parser(false);
    std::vector<ToolCall> begun, ended;
    bool open = false;
    int aborted = 0;
    auto absorb = [&](const std::vector<OutputEvent>& events) {
      for (const OutputEvent& e : events) {
        if (e.kind == Kind::kToolCallBegin) {
          ASSERT_FALSE(open);
          open = true;
          begun.push_back(ToolCall{e.tool_call.name, {}});
        } else if (e.kind == Kind::kToolCallArguments) {
          ASSERT_TRUE(open);
          begun.back().arguments += e.text;
        } else if (e.kind == Kind::kToolCallEnd) {
          ASSERT_TRUE(open);
          open = false;
          ASSERT_EQ(e.tool_call.arguments, begun.back().arguments);
          ended.push_back(e.tool_call);
        } else if (e.kind == Kind::kToolCallAbort) {
          ASSERT_TRUE(open);
          open = false;
          ++aborted;
        }
      }
    };
    std::size_t at = 0;
    while (at < text.size() && !::testing::Test::HasFailure()) {
      const std::size_t n = 1 + rng() % 12;
      absorb(parser.feed(std::string_view(text).substr(at, n)));
      at += n;
    }
    absorb(parser.finish());
    ASSERT_FALSE(open) << text;
    ASSERT_FALSE(::testing::Test::HasFailure()) << text;
    ASSERT_EQ(begun.size(), ended.size() + static_cast<std::size_t>(aborted)) << text;
    if (valid_utf8(text)) {
      for (const ToolCall& call : begun) ASSERT_TRUE(valid_utf8(call.arguments)) << text;
    }
    // One complete block and nothing else that is markup: the one-shot parse of the block agrees.
    const std::size_t end = body.find(kEnd);
    if (end == std::string::npos || body.substr(0, end).find(kStart) != std::string::npos ||
        body.find(kStart, end) != std::string::npos) {
      continue;
    }
    const ParsedCompletion ref = parse_completion(kStart + body.substr(0, end + kEnd.size()), false);
    ASSERT_EQ(parser.error(), ref.error) << text;
    ASSERT_EQ(ended.size(), ref.tool_calls.size()) << text;
    for (std::size_t i = 0; i < ended.size(); ++i) ASSERT_EQ(ended[i].arguments, ref.tool_calls[i].arguments) << text;
    ++compared;
  }
  EXPECT_GT(compared, 3000);
}

}  // namespace
}  // namespace megamoe::text
