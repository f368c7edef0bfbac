// Text in, text out: `megamoe generate --tokenizer/--prompt/--chat` through the
// real binary, against oracles made by tools/make_tiny_tokenizer.py: the tiny
// tokenizer's encodings by Hugging Face `tokenizers`, and transformers' fp64
// greedy continuation of tests/data/tiny-text decoded by `tokenizers`. The
// chat output routing is checked against the official parser's goldens.
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "cli_run.hpp"
#include "core/error.hpp"
#include "runtime/text_generation.hpp"
#include "runtime/token_ids.hpp"
#include "text/chat_encoding.hpp"
#include "text/tokenizer.hpp"

namespace megamoe {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

const std::string kData = MEGAMOE_TEST_DATA_DIR;
const std::string kTinyText = kData + "/tiny-text";
const std::string kTinyTokenizer = kData + "/tiny-tokenizer/tokenizer.json";
constexpr int32_t kEos = 1;  // tiny-text's eos_token_id, the tokenizer's <｜end▁of▁sentence｜>

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

const json& tiny_goldens() {
  static const json g = json::parse(slurp(kData + "/tiny-tokenizer/goldens.json"));
  return g;
}

const text::Tokenizer& tiny_tokenizer() {
  static const text::Tokenizer t = text::Tokenizer::from_file(kTinyTokenizer);
  return t;
}

using testing::CliRun;
using testing::run_megamoe;

// Single-quoted for the shell (bytes kept as they are).
std::string shell_quoted(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string ids_arg(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

// The ids of `--show-ids` (last stderr line "ids: a,b,c"), and what came before it.
std::vector<int32_t> shown_ids(const std::string& err, std::string* before = nullptr) {
  const std::size_t at = err.rfind("ids: ");
  EXPECT_NE(at, std::string::npos) << err;
  if (at == std::string::npos) return {};
  if (before) *before = err.substr(0, at);
  std::string line = err.substr(at + 5);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  return parse_token_ids(line);
}

std::string text_args(const std::string& extra) {
  return "generate --model " + kTinyText + " --tokenizer " + kTinyTokenizer + " " + extra;
}

TEST(GenerateText, TinyTokenizerEncodesLikeTokenizers) {
  const auto& goldens = tiny_goldens()["encode"];
  ASSERT_GE(goldens.size(), 5u);
  for (const json& c : goldens) {
    const std::string text = c["text"];
    EXPECT_EQ(tiny_tokenizer().encode(text), c["ids"].get<std::vector<int32_t>>()) << text;
    EXPECT_EQ(tiny_tokenizer().decode(c["ids"].get<std::vector<int32_t>>()), text);
  }
  EXPECT_EQ(tiny_tokenizer().vocab_size(), 320u);
}

// --prompt: BOS + encoded text, the greedy ids of transformers, and on stdout
// exactly the `tokenizers` decode of those ids (plus the final newline).
TEST(GenerateText, PromptStreamsTheTextOfTransformersGreedyIds) {
  const auto& goldens = tiny_goldens()["generate"];
  ASSERT_GE(goldens.size(), 2u);
  for (const json& g : goldens) {
    const std::string prompt = g["prompt"];
    const auto want_ids = g["ids"].get<std::vector<int32_t>>();
    const std::string want_text = g["text"];
    const auto want_prompt = g["prompt_ids"].get<std::vector<int32_t>>();
    const CliRun r = run_megamoe(text_args("--prompt " + shell_quoted(prompt) + " --max-new-tokens " +
                                        std::to_string(want_ids.size()) + " --ignore-eos --show-ids"));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(shown_ids(r.err), want_ids) << prompt;
    EXPECT_EQ(r.out, want_text + "\n") << prompt;
    EXPECT_EQ(r.out, tiny_tokenizer().decode(want_ids) + "\n") << "our decode agrees with tokenizers'";
    EXPECT_EQ(encode_text_prompt(tiny_tokenizer(), prompt, 0), g["prompt_ids"].get<std::vector<int32_t>>());

    // --ids with the same prompt ids prints the same ids, as it always did.
    const CliRun by_ids = run_megamoe("generate --model " + kTinyText + " --ids " +
                                   ids_arg(g["prompt_ids"].get<std::vector<int32_t>>()) + " --max-new-tokens " +
                                   std::to_string(want_ids.size()) + " --ignore-eos");
    ASSERT_EQ(by_ids.code, 0) << by_ids.err;
    EXPECT_EQ(by_ids.out, ids_arg(want_ids) + "\n");

    // --no-bos leaves the BOS out: the prompt (and so the continuation) changes.
    const CliRun no_bos = run_megamoe(text_args("--prompt " + shell_quoted(prompt) + " --max-new-tokens 4 --no-bos --show-ids"));
    ASSERT_EQ(no_bos.code, 0) << no_bos.err;
    const auto without_bos = std::vector<int32_t>(want_prompt.begin() + 1, want_prompt.end());
    EXPECT_EQ(encode_text_prompt(tiny_tokenizer(), prompt, -1), without_bos);
    const CliRun no_bos_ids =
        run_megamoe("generate --model " + kTinyText + " --ids " + ids_arg(without_bos) + " --max-new-tokens 4");
    EXPECT_EQ(no_bos_ids.out, ids_arg(shown_ids(no_bos.err)) + "\n");
  }
}

// --stop: output ends right before the first occurrence of the stop string,
// and generation stops there (fewer ids than allowed).
TEST(GenerateText, StopStringEndsTheStream) {
  const json& g = tiny_goldens()["generate"][0];
  const std::string full = g["text"];
  const auto all_ids = g["ids"].get<std::vector<int32_t>>();
  // Two ASCII letters well inside the golden text as the stop string.
  std::size_t at = std::string::npos;
  for (std::size_t p = 4; p + 1 < full.size(); ++p) {
    if (std::isalpha(static_cast<unsigned char>(full[p])) && std::isalpha(static_cast<unsigned char>(full[p + 1]))) {
      at = p;
      break;
    }
  }
  ASSERT_NE(at, std::string::npos) << "fixture text has no two ASCII letters in a row: " << full;
  const std::string stop = full.substr(at, 2);
  const CliRun r = run_megamoe(text_args("--prompt " + shell_quoted(g["prompt"].get<std::string>()) + " --max-new-tokens " +
                                      std::to_string(all_ids.size()) + " --ignore-eos --show-ids --stop " +
                                      shell_quoted(stop) + " --stop 'never-appears'"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, full.substr(0, full.find(stop)) + "\n") << "stop " << stop;
  const std::vector<int32_t> ids = shown_ids(r.err);
  ASSERT_LT(ids.size(), all_ids.size());
  EXPECT_EQ(ids, std::vector<int32_t>(all_ids.begin(), all_ids.begin() + static_cast<long>(ids.size())));
  EXPECT_NE(tiny_tokenizer().decode(ids).find(stop), std::string::npos) << "stopped once the stop string was complete";
  EXPECT_EQ(tiny_tokenizer().decode({ids.begin(), ids.end() - 1}).find(stop), std::string::npos) << "not later";
}

// The official prompt of a one-user-message chat (tests/data/text/chat_goldens.json).
std::string official_single_user_prompt(bool thinking, std::string* content) {
  const json goldens = json::parse(slurp(kData + "/text/chat_goldens.json"));
  for (const json& c : goldens["cases"]) {
    if (c["name"] == (thinking ? "single_user/thinking" : "single_user/chat")) {
      *content = c["messages"][0]["content"];
      return c["prompt"];
    }
  }
  ADD_FAILURE() << "chat_goldens.json has no single_user case";
  return {};
}

// --chat: the prompt is the official encoding; in chat mode the generated text
// is the answer on stdout, in thinking mode (no </think> generated) it is all
// reasoning on stderr and stdout stays empty. Special tokens never show.
TEST(GenerateText, ChatPromptAnswerAndReasoningGoApart) {
  for (const bool thinking : {false, true}) {
    std::string content;
    const std::string official = official_single_user_prompt(thinking, &content);
    const std::vector<int32_t> prompt_ids = tiny_tokenizer().encode(official);
    const CliRun r = run_megamoe(text_args("--chat --prompt " + shell_quoted(content) + (thinking ? " --thinking" : "") +
                                        " --max-new-tokens 20 --ignore-eos --show-ids"));
    ASSERT_EQ(r.code, 0) << r.err;
    std::string reasoning;
    const std::vector<int32_t> ids = shown_ids(r.err, &reasoning);
    ASSERT_EQ(ids.size(), 20u);

    const CliRun by_ids = run_megamoe("generate --model " + kTinyText + " --ids " + ids_arg(prompt_ids) +
                                   " --max-new-tokens 20 --ignore-eos");
    ASSERT_EQ(by_ids.code, 0) << by_ids.err;
    EXPECT_EQ(by_ids.out, ids_arg(ids) + "\n") << "--chat encodes the official prompt";

    const std::string visible = tiny_tokenizer().decode(ids, /*skip_special=*/true);
    for (const char* marker : {"</think>", "<think>", "｜DSML｜", "<｜User｜>", "<｜Assistant｜>"}) {
      ASSERT_EQ(visible.find(marker), std::string::npos) << "fixture precondition: no markup generated";
    }
    if (thinking) {
      EXPECT_EQ(reasoning, visible);
      EXPECT_EQ(r.out, "\n");
    } else {
      EXPECT_EQ(reasoning, "");
      EXPECT_EQ(r.out, visible + "\n");
    }
  }
}

TEST(GenerateText, ChatFileIsAMessageList) {
  const auto path = std::filesystem::temp_directory_path() / ("megamoe_chat_" + std::to_string(::getpid()) + ".json");
  const ordered_json messages = ordered_json::parse(R"([{"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
      {"role": "user", "content": "Again"}])");
  std::ofstream(path) << messages.dump();
  const CliRun r = run_megamoe(text_args("--chat --chat-file " + path.string() + " --max-new-tokens 6 --ignore-eos --show-ids"));
  std::filesystem::remove(path);
  ASSERT_EQ(r.code, 0) << r.err;
  text::ChatOptions options;
  const std::vector<int32_t> prompt = tiny_tokenizer().encode(text::encode_chat(messages, options));
  const CliRun by_ids = run_megamoe("generate --model " + kTinyText + " --ids " + ids_arg(prompt) +
                                 " --max-new-tokens 6 --ignore-eos");
  EXPECT_EQ(by_ids.out, ids_arg(shown_ids(r.err)) + "\n");
}

// The streamer on each well-formed completion of the official parser goldens,
// fed as tiny-tokenizer ids one at a time: reasoning, answer and tool calls
// come out exactly as the official parser splits them, markup never.
TEST(GenerateText, StreamerRoutesCompletionsLikeTheOfficialParser) {
  const json goldens = json::parse(slurp(kData + "/text/chat_goldens.json"));
  int checked = 0;
  for (const json& g : goldens["parses"]) {
    if (!g["ok"].get<bool>()) continue;
    std::string reasoning, answer;
    std::vector<text::ToolCall> calls, streamed;  // whole (kToolCallEnd), and built from the fragments
    TextSinks sinks;
    sinks.reasoning = [&](std::string_view t) { reasoning += t; };
    sinks.answer = [&](std::string_view t) { answer += t; };
    sinks.tool_call = [&](const text::OutputEvent& e) {
      using Kind = text::OutputEvent::Kind;
      if (e.kind == Kind::kToolCallBegin) streamed.push_back(text::ToolCall{e.tool_call.name, {}});
      if (e.kind == Kind::kToolCallArguments) streamed.back().arguments += e.text;
      if (e.kind == Kind::kToolCallEnd) calls.push_back(e.tool_call);
      EXPECT_NE(e.kind, Kind::kToolCallAbort);
    };
    TextStreamOptions options;
    options.chat = true;
    options.thinking = g["thinking"];
    options.eos_ids = {kEos};
    TextStreamer streamer(tiny_tokenizer(), options, sinks);
    const std::vector<int32_t> ids = tiny_tokenizer().encode(g["text"].get<std::string>());
    bool running = true;
    for (const int32_t id : ids) {
      ASSERT_TRUE(running) << "stopped before the end: " << g["text"];
      running = streamer.push(id);
    }
    streamer.finish();
    EXPECT_EQ(reasoning, g["reasoning_content"].get<std::string>()) << g["text"];
    EXPECT_EQ(answer, g["content"].get<std::string>()) << g["text"];
    const json want_calls = g.value("tool_calls", json::array());
    ASSERT_EQ(calls.size(), want_calls.size()) << g["text"];
    ASSERT_EQ(streamed.size(), want_calls.size()) << g["text"];
    for (std::size_t i = 0; i < calls.size(); ++i) {
      EXPECT_EQ(calls[i].name, want_calls[i]["name"].get<std::string>());
      EXPECT_EQ(calls[i].arguments, want_calls[i]["arguments"].get<std::string>());
      EXPECT_EQ(streamed[i].name, calls[i].name);
      EXPECT_EQ(streamed[i].arguments, calls[i].arguments);
    }
    EXPECT_FALSE(streamer.truncated());
    ++checked;
  }
  EXPECT_GE(checked, 20);
}

TEST(GenerateText, StreamerRejectsAnIdTheTokenizerLacks) {
  TextStreamer streamer(tiny_tokenizer(), {}, {});
  EXPECT_TRUE(streamer.push(300));
  try {
    streamer.push(320);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("320"), std::string::npos) << e.what();
  }
}

// The real DeepSeek-V4 tokenizer (129280 tokens) against tiny-a (vocab 128).
TEST(GenerateText, TokenizerLargerThanTheModelIsRejected) {
  const char* real = std::getenv("MEGAMOE_TOKENIZER_JSON");
  ASSERT_TRUE(real && *real) << "MEGAMOE_TOKENIZER_JSON is not set: run `export MEGAMOE_TOKENIZER_JSON=$(bash "
                                "scripts/fetch_tokenizer.sh)` first";
  for (const std::string& mode : {std::string("--prompt 'Hello there'"), std::string("--chat --prompt Hi")}) {
    const CliRun r = run_megamoe("generate --model " + kData + "/tiny-a --tokenizer " + real + " " + mode);
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_NE(r.err.find("vocab_size 128"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("129280 tokens"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(real), std::string::npos) << r.err;
  }
  const CliRun tiny = run_megamoe("generate --model " + kData + "/tiny-a --tokenizer " + kTinyTokenizer + " --prompt 'Hello world'");
  EXPECT_EQ(tiny.code, 1);
  EXPECT_NE(tiny.err.find("prompt token id 303 (at index 1) is outside the model's vocab_size 128 (the tokenizer has 320 tokens)"),
            std::string::npos)
      << tiny.err;
}

TEST(GenerateText, BadArgumentsFailWithAClearMessage) {
  const auto chat_file = std::filesystem::temp_directory_path() / ("megamoe_badchat_" + std::to_string(::getpid()));
  struct Case {
    std::string args, needle;
  };
  const std::string model = "generate --model " + kTinyText + " ";
  const std::vector<Case> cases = {
      {model + "--prompt hi", "--prompt/--chat need --tokenizer"},
      {model + "--chat --prompt hi", "--prompt/--chat need --tokenizer"},
      {model + "--tokenizer " + kTinyTokenizer + " --ids 1,2 --prompt hi", "--ids cannot be combined"},
      {model + "--tokenizer " + kTinyTokenizer, "give the prompt as --ids, --prompt or --chat"},
      {model + "--tokenizer " + kTinyTokenizer + " --prompt \"$(printf 'caf\\303 \\377')\"",
       "--prompt: the prompt is not valid UTF-8 (ill-formed byte at offset 3)"},
      {model + "--tokenizer " + kTinyTokenizer + " --chat --prompt \"$(printf '\\342\\202')\"", "not valid UTF-8"},
      {model + "--tokenizer " + kTinyTokenizer + " --chat", "--chat needs --prompt TEXT or --chat-file FILE"},
      {model + "--tokenizer " + kTinyTokenizer + " --prompt hi --thinking", "--thinking needs --chat"},
      {model + "--tokenizer " + kTinyTokenizer + " --chat-file x.json", "--chat-file needs --chat"},
      {model + "--tokenizer " + kTinyTokenizer + " --chat --chat-file /nonexistent/chat.json",
       "/nonexistent/chat.json: cannot open"},
      {model + "--tokenizer " + kTinyTokenizer + " --chat --chat-file " + chat_file.string(),
       chat_file.string() + ": expected a JSON array of chat messages"},
      {model + "--ids 1,2 --stop x", "--stop needs a text prompt"},
      {model + "--tokenizer /nonexistent/tokenizer.json --prompt hi", "/nonexistent/tokenizer.json"},
      {model + "--tokenizer " + kTinyTokenizer + " --prompt '' --no-bos", "--prompt: the prompt is empty"},
  };
  std::ofstream(chat_file) << R"({"role": "user", "content": "not in a list"})";
  for (const Case& c : cases) {
    const CliRun r = run_megamoe(c.args);
    EXPECT_EQ(r.code, 1) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << "\n" << r.err;
  }
  std::filesystem::remove(chat_file);
}

}  // namespace
}  // namespace megamoe
