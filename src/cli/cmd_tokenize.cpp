// `megamoe tokenize`: text on stdin -> token ids as one JSON array (no special
// tokens added); --decode: a JSON array of ids on stdin -> the text; --chat: a
// JSON list of chat messages on stdin -> the ids of the DeepSeek-V4 prompt.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/command.hpp"
#include "core/error.hpp"
#include "text/chat_encoding.hpp"
#include "text/tokenizer.hpp"

namespace {

using megamoe::text::TokenId;
using megamoe::text::Tokenizer;

std::string read_stdin() {
  std::ios::sync_with_stdio(false);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

std::vector<TokenId> parse_ids(const std::string& input) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(input);
  } catch (const nlohmann::json::exception& e) {
    MEGAMOE_THROW("stdin: expected a JSON array of token ids: ", e.what());
  }
  MEGAMOE_CHECK(j.is_array(), "stdin: expected a JSON array of token ids, got ", j.type_name());
  std::vector<TokenId> ids;
  for (std::size_t i = 0; i < j.size(); ++i) {
    MEGAMOE_CHECK(j[i].is_number_integer(), "stdin: element ", i, " is not an integer token id");
    const auto v = j[i].get<std::int64_t>();
    MEGAMOE_CHECK(v >= 0 && v <= INT32_MAX, "stdin: element ", i, " (", v, ") is not a valid token id");
    ids.push_back(static_cast<TokenId>(v));
  }
  return ids;
}

int run_tokenize(int argc, char** argv) {
  CLI::App app{"tokenize stdin with a tokenizer.json (prints a JSON array of ids)", argv[0]};
  std::string tokenizer_path;
  bool decode = false, skip_special = false, chat = false, thinking = false, prompt_text = false;
  std::size_t max_bytes = Tokenizer::kDefaultMaxInputBytes;
  app.add_option("--tokenizer", tokenizer_path, "Hugging Face tokenizer.json")->required();
  app.add_flag("--decode", decode, "read a JSON array of ids and print their text");
  app.add_flag("--skip-special", skip_special, "with --decode: leave special tokens out");
  app.add_flag("--chat", chat, "read a JSON list of chat messages; encode the DeepSeek-V4 prompt");
  app.add_flag("--thinking", thinking, "with --chat: thinking mode");
  app.add_flag("--prompt-text", prompt_text, "with --chat: print the prompt text instead of ids");
  app.add_option("--max-bytes", max_bytes, "reject inputs larger than this");
  CLI11_PARSE(app, argc, argv);

  const std::string input = read_stdin();
  MEGAMOE_CHECK(input.size() <= max_bytes, "stdin: input of ", input.size(), " bytes exceeds --max-bytes ", max_bytes);
  Tokenizer tokenizer = Tokenizer::from_file(tokenizer_path);
  tokenizer.set_max_input_bytes(max_bytes);

  if (decode) {
    const std::string text = tokenizer.decode(parse_ids(input), skip_special);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  }
  std::string text = input;
  if (chat) {
    nlohmann::ordered_json messages;
    try {
      messages = nlohmann::ordered_json::parse(input);
    } catch (const nlohmann::json::exception& e) {
      MEGAMOE_THROW("stdin: expected a JSON list of chat messages: ", e.what());
    }
    megamoe::text::ChatOptions options;
    options.thinking = thinking;
    text = megamoe::text::encode_chat(messages, options);
    if (prompt_text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      return 0;
    }
  }
  const std::string out = nlohmann::json(tokenizer.encode(text)).dump() + "\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

const megamoe::cli::Registration kTokenize{"tokenize", "text <-> token ids with a tokenizer.json", run_tokenize};

}  // namespace
