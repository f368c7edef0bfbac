// `megamoe tokenize`: text on stdin -> token ids as one JSON array (no special
// tokens added); --decode: a JSON array of ids on stdin -> the text; --chat: a
// JSON list of chat messages on stdin -> the ids of the DeepSeek-V4 prompt.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/command.hpp"
#include "cli/options.hpp"
#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/json_file.hpp"
#include "text/chat_encoding.hpp"
#include "text/tokenizer.hpp"

namespace {

using megamoe::text::TokenId;
using megamoe::text::Tokenizer;

std::vector<TokenId> parse_ids(const std::string& input) {
  const nlohmann::json j = megamoe::parse_json_text(input, "stdin (a JSON array of token ids)");
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
  bool decode = false, skip_special = false, chat = false, thinking = false, prompt_text = false,
       special_in_content = false;
  std::string max_bytes_text;
  app.add_option("--tokenizer", tokenizer_path, "Hugging Face tokenizer.json")->required();
  app.add_flag("--decode", decode, "read a JSON array of ids and print their text");
  app.add_flag("--skip-special", skip_special, "with --decode: leave special tokens out");
  app.add_flag("--chat", chat, "read a JSON list of chat messages; encode the DeepSeek-V4 prompt");
  app.add_flag("--thinking", thinking, "with --chat: thinking mode");
  app.add_flag("--prompt-text", prompt_text, "with --chat: print the prompt text instead of ids");
  app.add_flag("--special-tokens-in-content", special_in_content,
               "with --chat: special-token text inside message content becomes control tokens (default: plain text)");
  app.add_option("--max-bytes", max_bytes_text,
                 "reject inputs larger than this, checked while reading stdin (default 268435456)");
  CLI11_PARSE(app, argc, argv);
  const auto max_bytes = static_cast<std::size_t>(
      max_bytes_text.empty() ? static_cast<int64_t>(Tokenizer::kDefaultMaxInputBytes)
                             : megamoe::cli::parse_int_option("--max-bytes", max_bytes_text, 0, int64_t{1} << 40));
  MEGAMOE_CHECK(!special_in_content || chat, "--special-tokens-in-content needs --chat");

  // Read no more than --max-bytes (+1): the limit holds before the work, not after.
  const std::string input = megamoe::read_input_stream(stdin, "stdin", max_bytes, "--max-bytes");
  Tokenizer tokenizer = Tokenizer::from_file(tokenizer_path);
  tokenizer.set_max_input_bytes(max_bytes);

  if (decode) {
    const std::string text = tokenizer.decode(parse_ids(input), skip_special);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  }
  std::vector<TokenId> ids;
  if (chat) {
    const nlohmann::ordered_json messages =
        megamoe::parse_ordered_json_text(input, "stdin (a JSON list of chat messages)");
    megamoe::text::ChatOptions options;
    options.thinking = thinking;
    options.special_tokens_in_content = special_in_content;
    if (prompt_text) {
      const std::string text = megamoe::text::encode_chat(messages, options);
      std::fwrite(text.data(), 1, text.size(), stdout);
      return 0;
    }
    ids = megamoe::text::encode_chat_ids(tokenizer, messages, options);
  } else {
    ids = tokenizer.encode(input);
  }
  // As nlohmann::json(ids).dump() writes it, without building a JSON array of every id.
  std::string out = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(ids[i]);
    if (out.size() >= (1u << 16)) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      out.clear();
    }
  }
  out += "]\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

const megamoe::cli::Registration kTokenize{"tokenize", "text <-> token ids with a tokenizer.json", run_tokenize};

}  // namespace
