// Incremental detokenization for generation: feed token ids one at a time and
// get text deltas that never split a UTF-8 character, with stop strings and
// end-of-sequence handling.
#pragma once

#include <string>
#include <vector>

#include "text/tokenizer.hpp"

namespace megamoe::text {

struct StreamOptions {
  std::vector<TokenId> eos_ids;         // ids that end the stream (not printed)
  std::vector<std::string> stop_strings;  // text that ends the stream (not printed)
  bool skip_special = false;            // drop special tokens (BOS, pad, ...) from the text
};

enum class StreamStatus { kRunning, kStoppedByEos, kStoppedByString };

class StreamDecoder {
 public:
  StreamDecoder(const Tokenizer& tokenizer, StreamOptions options);

  // Adds one generated id; returns the text that became final. Text that may
  // still be the start of a stop string, or an incomplete UTF-8 character, is
  // held back. After the stream stopped, further ids are ignored.
  std::string push(TokenId id);

  // Ends the stream (max tokens reached, or after EOS): returns what was held
  // back; an incomplete character at the end becomes U+FFFD.
  std::string finish();

  StreamStatus status() const { return status_; }
  bool stopped() const { return status_ != StreamStatus::kRunning; }
  const std::string& matched_stop() const { return matched_stop_; }
  const std::string& text() const { return emitted_; }  // everything returned so far

 private:
  std::string take_ready(bool at_end);

  const Tokenizer& tokenizer_;
  StreamOptions options_;
  std::string pending_bytes_;  // raw bytes not yet turned into text
  std::string held_text_;      // complete text held back for stop-string matching
  std::string emitted_;
  std::string matched_stop_;
  StreamStatus status_ = StreamStatus::kRunning;
};

}  // namespace megamoe::text
