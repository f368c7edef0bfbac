#include "runtime/text_generation.hpp"


#include "core/error.hpp"
#include "core/json_file.hpp"
#include "text/unicode.hpp"

namespace megamoe {

std::vector<int32_t> encode_text_prompt(const text::Tokenizer& tokenizer, std::string_view prompt, int64_t bos_id,
                                        const std::string& source) {
  const std::size_t bad = text::first_invalid_utf8(prompt);
  MEGAMOE_CHECK(bad == prompt.size(), source, ": the prompt is not valid UTF-8 (ill-formed byte at offset ", bad,
                ")");
  std::vector<int32_t> ids;
  if (bos_id >= 0) ids.push_back(static_cast<int32_t>(bos_id));
  const std::vector<text::TokenId> encoded = tokenizer.encode(prompt);
  ids.insert(ids.end(), encoded.begin(), encoded.end());
  MEGAMOE_CHECK(!ids.empty(), source, ": the prompt is empty (and no BOS is added)");
  return ids;
}

std::vector<int32_t> encode_chat_prompt(const text::Tokenizer& tokenizer, const nlohmann::ordered_json& messages,
                                        const text::ChatOptions& options) {
  const text::ChatPrompt prompt = text::render_chat(messages, options);
  const std::size_t bad = text::first_invalid_utf8(prompt.text);
  MEGAMOE_CHECK(bad == prompt.text.size(), "chat prompt: the prompt is not valid UTF-8 (ill-formed byte at offset ",
                bad, ")");
  // Content is text: special-token strings in it never become control tokens
  // unless the caller asked for it (ChatOptions::special_tokens_in_content).
  const std::vector<text::TokenId> ids = options.special_tokens_in_content
                                             ? tokenizer.encode(prompt.text)
                                             : tokenizer.encode(prompt.text, prompt.content);
  MEGAMOE_CHECK(!ids.empty(), "chat prompt: the prompt is empty (and no BOS is added)");
  return ids;
}

nlohmann::ordered_json read_chat_messages(const std::string& path) {
  const nlohmann::ordered_json messages = read_ordered_json_file(path, kMaxChatFileBytes);
  MEGAMOE_CHECK(messages.is_array(), path, ": expected a JSON array of chat messages, got ", messages.type_name());
  MEGAMOE_CHECK(!messages.empty(), path, ": the chat has no messages");
  return messages;
}

nlohmann::ordered_json single_user_message(const std::string& text) {
  nlohmann::ordered_json message;
  message["role"] = "user";
  message["content"] = text;
  return nlohmann::ordered_json::array({message});
}

void check_prompt_fits_model(std::span<const int32_t> prompt, const text::Tokenizer& tokenizer,
                             int64_t model_vocab_size, const std::string& tokenizer_name) {
  for (std::size_t i = 0; i < prompt.size(); ++i) {
    MEGAMOE_CHECK(prompt[i] >= 0 && prompt[i] < model_vocab_size, "tokenizer ", tokenizer_name, " does not fit the model: ",
                  "prompt token id ", prompt[i], " (at index ", i, ") is outside the model's vocab_size ",
                  model_vocab_size, " (the tokenizer has ", tokenizer.vocab_size(), " tokens)");
  }
}

namespace {

text::StreamOptions stream_options(const TextStreamOptions& options) {
  text::StreamOptions s;
  s.eos_ids = options.eos_ids;
  s.stop_strings = options.stop_strings;
  s.skip_special = options.chat;  // BOS/pad inside a chat answer are markup, never text
  return s;
}

}  // namespace

TextStreamer::TextStreamer(const text::Tokenizer& tokenizer, TextStreamOptions options, TextSinks sinks)
    : tokenizer_(tokenizer),
      chat_(options.chat),
      sinks_(std::move(sinks)),
      decoder_(tokenizer, stream_options(options)),
      parser_(options.thinking) {
  MEGAMOE_CHECK(chat_ || !options.thinking, "thinking mode needs chat mode");
}

bool TextStreamer::push(int32_t id) {
  if (decoder_.stopped()) return false;
  MEGAMOE_CHECK(id >= 0 && static_cast<std::size_t>(id) < tokenizer_.vocab_size(), "the model generated token id ",
                id, ", which the tokenizer (", tokenizer_.vocab_size(), " tokens) does not have");
  route(decoder_.push(id), /*at_end=*/false);
  if (decoder_.stopped()) route({}, /*at_end=*/true);
  return !decoder_.stopped();
}

void TextStreamer::finish() {
  if (!decoder_.stopped()) route(decoder_.finish(), /*at_end=*/true);
}

void TextStreamer::route(const std::string& delta, bool at_end) {
  if (!chat_) {
    if (!delta.empty() && sinks_.answer) sinks_.answer(delta);
    return;
  }
  std::vector<text::OutputEvent> events = parser_.feed(delta);
  if (at_end) {
    std::vector<text::OutputEvent> last = parser_.finish();
    events.insert(events.end(), last.begin(), last.end());
  }
  for (const text::OutputEvent& e : events) {
    switch (e.kind) {
      case text::OutputEvent::Kind::kReasoning:
        if (sinks_.reasoning) sinks_.reasoning(e.text);
        break;
      case text::OutputEvent::Kind::kContent:
        if (sinks_.answer) sinks_.answer(e.text);
        break;
      case text::OutputEvent::Kind::kToolCallBegin:
      case text::OutputEvent::Kind::kToolCallArguments:
      case text::OutputEvent::Kind::kToolCallEnd:
      case text::OutputEvent::Kind::kToolCallAbort:
        if (sinks_.tool_call) sinks_.tool_call(e);
        break;
      case text::OutputEvent::Kind::kEnd:
        break;
    }
  }
}

}  // namespace megamoe
