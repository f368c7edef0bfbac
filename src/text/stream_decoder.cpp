#include "text/stream_decoder.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "text/unicode.hpp"

namespace megamoe::text {

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, StreamOptions options)
    : tokenizer_(tokenizer), options_(std::move(options)) {
  for (const std::string& s : options_.stop_strings) {
    MEGAMOE_CHECK(!s.empty(), "stream decoder: empty stop string");
    MEGAMOE_CHECK(is_valid_utf8(s), "stream decoder: stop string is not valid UTF-8");
  }
}

std::string StreamDecoder::push(TokenId id) {
  if (stopped()) return {};
  if (std::find(options_.eos_ids.begin(), options_.eos_ids.end(), id) != options_.eos_ids.end()) {
    std::string out = take_ready(/*at_end=*/true);
    status_ = StreamStatus::kStoppedByEos;
    return out;
  }
  const std::string& bytes = tokenizer_.token_bytes(id);
  if (!(options_.skip_special && tokenizer_.is_special(id))) pending_bytes_ += bytes;
  return take_ready(/*at_end=*/false);
}

std::string StreamDecoder::finish() {
  if (stopped()) return {};
  std::string out = take_ready(/*at_end=*/true);
  status_ = StreamStatus::kStoppedByEos;
  return out;
}

std::string StreamDecoder::take_ready(bool at_end) {
  // 1. Move the bytes that form complete text from pending_bytes_ to held_text_.
  //    Ill-formed bytes become U+FFFD as soon as they cannot start a valid
  //    sequence any more, exactly as decoding the whole output would.
  std::size_t pos = 0, subpart = 0;
  bool truncated = false;
  while (pos < pending_bytes_.size()) {
    const std::size_t n = utf8_sequence_length(pending_bytes_, pos, subpart, truncated);
    if (n > 0) {
      held_text_.append(pending_bytes_, pos, n);
      pos += n;
    } else if (truncated && !at_end) {
      break;  // an incomplete character: wait for the next token
    } else {
      held_text_ += "\xEF\xBF\xBD";
      pos += subpart;
    }
  }
  pending_bytes_.erase(0, pos);

  // 2. Stop strings: cut at the earliest match; otherwise hold back the longest
  //    tail that is a prefix of some stop string.
  std::size_t stop_at = std::string::npos;
  for (const std::string& s : options_.stop_strings) {
    const std::size_t p = held_text_.find(s);
    if (p < stop_at) {
      stop_at = p;
      matched_stop_ = s;
    }
  }
  std::string out;
  if (stop_at != std::string::npos) {
    out = held_text_.substr(0, stop_at);
    held_text_.clear();
    pending_bytes_.clear();
    status_ = StreamStatus::kStoppedByString;
  } else {
    std::size_t keep = 0;
    if (!at_end) {
      for (const std::string& s : options_.stop_strings) {
        for (std::size_t k = std::min(s.size() - 1, held_text_.size()); k > keep; --k) {
          if (held_text_.compare(held_text_.size() - k, k, s, 0, k) == 0) {
            keep = k;
            break;
          }
        }
      }
    }
    out = held_text_.substr(0, held_text_.size() - keep);
    held_text_.erase(0, held_text_.size() - keep);
  }
  emitted_ += out;
  return out;
}

}  // namespace megamoe::text
