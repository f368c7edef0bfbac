// Text in, text out around the id-level generation of session.hpp: prompt
// encoding (raw text or DeepSeek-V4 chat messages), the check that the
// tokenizer fits the model's vocabulary, and streaming the generated ids back
// to text (StreamDecoder for UTF-8 and stop strings, then, in chat mode,
// ChatOutputParser so reasoning, answer and tool calls arrive separately and
// no markup reaches the answer).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/deepseek_v4/model.hpp"
#include "runtime/session.hpp"
#include "text/chat_encoding.hpp"
#include "text/chat_output.hpp"
#include "text/stream_decoder.hpp"
#include "text/tokenizer.hpp"

namespace megamoe {

// Ids of a raw text prompt: `bos_id` (skipped when < 0) followed by the text
// encoded without adding special tokens. Throws on invalid UTF-8, naming
// `source` (e.g. "--prompt") and the byte offset, and on an empty result.
std::vector<int32_t> encode_text_prompt(const text::Tokenizer& tokenizer, std::string_view prompt, int64_t bos_id,
                                        const std::string& source = "prompt");

// Ids of the DeepSeek-V4 chat prompt of `messages` (text::render_chat, then
// encode with the messages' text as plain text: special-token strings inside
// content are not control tokens unless options.special_tokens_in_content).
std::vector<int32_t> encode_chat_prompt(const text::Tokenizer& tokenizer, const nlohmann::ordered_json& messages,
                                        const text::ChatOptions& options);

// The messages of a chat file: a JSON array of OpenAI-style message objects.
// Throws naming the file on unreadable, malformed or non-array content.
nlohmann::ordered_json read_chat_messages(const std::string& path);

// A one-message conversation: [{"role": "user", "content": text}].
nlohmann::ordered_json single_user_message(const std::string& text);

// Every prompt id must be a row of the model's embedding: throws naming the
// first id that is not, the tokenizer's size and the model's vocab_size.
void check_prompt_fits_model(std::span<const int32_t> prompt, const text::Tokenizer& tokenizer,
                             int64_t model_vocab_size, const std::string& tokenizer_name);

// Where streamed text goes. Raw mode sends all text to `answer`; chat mode
// splits it into reasoning, answer and tool calls, which arrive as they are
// generated: the kToolCallBegin, kToolCallArguments, kToolCallEnd (the whole
// call) and kToolCallAbort events of text/output_event.hpp.
struct TextSinks {
  std::function<void(std::string_view)> answer;
  std::function<void(std::string_view)> reasoning;
  std::function<void(const text::OutputEvent&)> tool_call;
};

struct TextStreamOptions {
  bool chat = false;      // parse DeepSeek-V4 output markup
  bool thinking = false;  // chat: the prompt ended in <think>, output starts as reasoning
  std::vector<int32_t> eos_ids;           // end the stream (not printed)
  std::vector<std::string> stop_strings;  // end the stream (not printed)
};

// Generated ids in, text to the sinks out, one id at a time.
class TextStreamer {
 public:
  TextStreamer(const text::Tokenizer& tokenizer, TextStreamOptions options, TextSinks sinks);

  // Adds one generated id; returns false once the stream has stopped (EOS or a
  // stop string). Throws on an id the tokenizer does not have.
  bool push(int32_t id);
  // Flushes held-back text (call once, after the last push).
  void finish();

  text::StreamStatus status() const { return decoder_.status(); }
  const std::string& matched_stop() const { return decoder_.matched_stop(); }  // the stop string that ended it
  const std::string& text() const { return decoder_.text(); }  // all decoded text, markup included
  bool truncated() const { return parser_.truncated(); }        // chat: an unfinished tool-call block was dropped
  const std::string& parse_error() const { return parser_.error(); }

 private:
  void route(const std::string& delta, bool at_end);

  const text::Tokenizer& tokenizer_;
  bool chat_;
  TextSinks sinks_;
  text::StreamDecoder decoder_;
  text::ChatOutputParser parser_;
};

}  // namespace megamoe
