#include "text/tokenizer.hpp"

#include <algorithm>
#include <array>
#include <fstream>
#include <mutex>
#include <queue>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/json_file.hpp"
#include "text/byte_level.hpp"
#include "text/pre_tokenizer.hpp"
#include "text/unicode.hpp"

namespace megamoe::text {
namespace {

using json = nlohmann::json;

// Open-addressing map from a token-id pair to (merge rank, merged id): the BPE
// inner loop looks a pair up for every adjacent symbol pair.
class MergeTable {
 public:
  struct Entry {
    std::uint64_t key = kEmpty;
    std::uint32_t rank = 0;
    TokenId merged = 0;
  };
  static constexpr std::uint64_t kEmpty = ~std::uint64_t{0};

  void reserve(std::size_t n) {
    std::size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    slots_.assign(cap, Entry{});
    mask_ = cap - 1;
  }
  // Returns false when the pair is already present (a duplicate merge).
  bool insert(TokenId a, TokenId b, std::uint32_t rank, TokenId merged) {
    const std::uint64_t key = pack(a, b);
    for (std::size_t i = hash(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return false;
      if (slots_[i].key == kEmpty) {
        slots_[i] = Entry{key, rank, merged};
        return true;
      }
    }
  }
  const Entry* find(TokenId a, TokenId b) const {
    const std::uint64_t key = pack(a, b);
    for (std::size_t i = hash(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i];
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static std::uint64_t pack(TokenId a, TokenId b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }
  std::size_t hash(std::uint64_t key) const {
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ull) >> 20) & mask_;
  }
  std::vector<Entry> slots_;
  std::size_t mask_ = 0;
};

// Added tokens matched in one pass: leftmost, and longest at that position.
struct AddedPass {
  std::array<std::vector<const AddedToken*>, 256> by_first_byte;  // longest first
  bool empty = true;

  void add(const AddedToken* t) {
    by_first_byte[static_cast<unsigned char>(t->content[0])].push_back(t);
    empty = false;
  }
  void finish() {
    for (auto& bucket : by_first_byte) {
      std::stable_sort(bucket.begin(), bucket.end(),
                       [](const AddedToken* x, const AddedToken* y) { return x->content.size() > y->content.size(); });
    }
  }
  const AddedToken* match_at(std::string_view text, std::size_t pos) const {
    for (const AddedToken* t : by_first_byte[static_cast<unsigned char>(text[pos])]) {
      if (text.compare(pos, t->content.size(), t->content) == 0) return t;
    }
    return nullptr;
  }
};

// A stretch of the input: either one added token or plain text to BPE.
struct Segment {
  std::size_t begin, end;
  TokenId added_id;  // -1 for plain text
};

std::string describe(const json& j) {
  std::string s = j.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

}  // namespace

struct Tokenizer::Impl {
  std::string origin;
  std::unordered_map<std::string, TokenId> token_ids;  // vocabulary and added tokens
  std::vector<std::string> id_bytes;                   // decoded bytes per id
  std::vector<std::uint8_t> id_special;
  std::vector<AddedToken> added;
  std::array<TokenId, 256> byte_ids{};
  MergeTable merges;
  PreTokenizer pre_tokenizer;
  AddedPass raw_pass, normalized_pass;
  std::size_t max_input_bytes = kDefaultMaxInputBytes;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<TokenId>> cache;
  static constexpr std::size_t kCacheLimit = 1u << 17;

  [[noreturn]] void fail(const std::string& field, const std::string& problem) const {
    MEGAMOE_THROW("tokenizer ", origin, ": ", field, ": ", problem);
  }

  void load(const json& root);
  void load_model(const json& model);
  void load_pre_tokenizer(const json& pre);
  void load_added_tokens(const json& list);
  void check_normalizer_and_decoder(const json& root);

  void split_added(std::string_view text, std::vector<Segment>& out) const;
  void check_input(std::string_view text) const;
  void encode_segments(std::string_view text, const std::vector<Segment>& segments, std::vector<TokenId>& ids) const;
  void bpe_piece(std::string_view piece, std::vector<TokenId>& out) const;
  void bpe_uncached(std::string_view piece, std::vector<TokenId>& out) const;
};

void Tokenizer::Impl::load(const json& root) {
  if (!root.is_object()) fail("(root)", "not a JSON object");
  if (!root.contains("model")) fail("model", "missing");
  load_model(root["model"]);
  check_normalizer_and_decoder(root);
  load_pre_tokenizer(root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json());
  if (root.contains("added_tokens")) load_added_tokens(root["added_tokens"]);
  raw_pass.finish();
  normalized_pass.finish();
}

void Tokenizer::Impl::load_model(const json& model) {
  if (!model.is_object()) fail("model", "not an object");
  if (!model.contains("type") || !model["type"].is_string()) fail("model.type", "missing");
  const std::string type = model["type"];
  if (type != "BPE") fail("model.type", "unsupported model type '" + type + "' (only BPE)");
  auto must_be_null_or = [&](const char* key, auto ok) {
    if (model.contains(key) && !model[key].is_null() && !ok(model[key]))
      fail(std::string("model.") + key, "unsupported value " + describe(model[key]));
  };
  must_be_null_or("dropout", [](const json& v) { return v.is_number() && v.get<double>() == 0.0; });
  must_be_null_or("continuing_subword_prefix", [](const json& v) { return v == ""; });
  must_be_null_or("end_of_word_suffix", [](const json& v) { return v == ""; });
  must_be_null_or("byte_fallback", [](const json& v) { return v == false; });
  must_be_null_or("ignore_merges", [](const json& v) { return v == false; });

  if (!model.contains("vocab") || !model["vocab"].is_object()) fail("model.vocab", "missing or not an object");
  const json& vocab = model["vocab"];
  if (vocab.empty()) fail("model.vocab", "empty");
  token_ids.reserve(vocab.size() * 2);
  std::vector<std::pair<TokenId, const std::string*>> by_id;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) fail("model.vocab[\"" + it.key() + "\"]", "id is not an integer");
    const auto id = it.value().get<std::int64_t>();
    if (id < 0 || id > (1 << 24)) fail("model.vocab[\"" + it.key() + "\"]", "id " + std::to_string(id) + " out of range");
    token_ids[it.key()] = static_cast<TokenId>(id);
    by_id.emplace_back(static_cast<TokenId>(id), &it.key());
  }
  std::sort(by_id.begin(), by_id.end());
  for (std::size_t i = 1; i < by_id.size(); ++i) {
    if (by_id[i].first == by_id[i - 1].first)
      fail("model.vocab", "id " + std::to_string(by_id[i].first) + " used twice");
  }
  id_bytes.assign(static_cast<std::size_t>(by_id.back().first) + 1, std::string());
  id_special.assign(id_bytes.size(), 0);
  for (const auto& [id, token] : by_id) {
    std::string& bytes = id_bytes[static_cast<std::size_t>(id)];
    if (!byte_level_to_bytes(*token, bytes)) bytes = *token;
  }
  for (int b = 0; b < 256; ++b) {
    std::string symbol;
    append_utf8(symbol, byte_to_char(static_cast<std::uint8_t>(b)));
    const auto it = token_ids.find(symbol);
    byte_ids[b] = it == token_ids.end() ? -1 : it->second;  // missing bytes are dropped, as tokenizers does
  }

  if (!model.contains("merges") || !model["merges"].is_array()) fail("model.merges", "missing or not an array");
  const json& list = model["merges"];
  merges.reserve(list.size());
  for (std::size_t rank = 0; rank < list.size(); ++rank) {
    const json& m = list[rank];
    std::string left, right;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      const auto space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        fail("model.merges[" + std::to_string(rank) + "]", "expected \"left right\", got " + describe(m));
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0];
      right = m[1];
    } else {
      fail("model.merges[" + std::to_string(rank) + "]", "expected a string or a pair of strings, got " + describe(m));
    }
    const auto l = token_ids.find(left), r = token_ids.find(right), merged = token_ids.find(left + right);
    if (l == token_ids.end() || r == token_ids.end())
      fail("model.merges[" + std::to_string(rank) + "]", "token of " + describe(m) + " not in the vocabulary");
    if (merged == token_ids.end())
      fail("model.merges[" + std::to_string(rank) + "]", "merged token '" + left + right + "' not in the vocabulary");
    // A repeated pair keeps its first (lowest) rank, as tokenizers does.
    merges.insert(l->second, r->second, static_cast<std::uint32_t>(rank), merged->second);
  }
}

void Tokenizer::Impl::check_normalizer_and_decoder(const json& root) {
  if (root.contains("normalizer") && !root["normalizer"].is_null()) {
    const json& n = root["normalizer"];
    const bool empty_sequence = n.is_object() && n.value("type", "") == "Sequence" && n.contains("normalizers") &&
                                n["normalizers"].is_array() && n["normalizers"].empty();
    if (!empty_sequence) fail("normalizer", "unsupported normalizer " + describe(n) + " (only none)");
  }
  if (root.contains("decoder") && !root["decoder"].is_null()) {
    const json& d = root["decoder"];
    if (!d.is_object() || d.value("type", "") != "ByteLevel")
      fail("decoder", "unsupported decoder " + describe(d) + " (only ByteLevel)");
  }
}

void Tokenizer::Impl::load_pre_tokenizer(const json& pre) {
  if (pre.is_null()) fail("pre_tokenizer", "missing (a byte-level BPE needs a ByteLevel pre-tokenizer)");
  if (!pre.is_object() || !pre.contains("type")) fail("pre_tokenizer", "not an object with a type");
  std::vector<json> steps;
  if (pre["type"] == "Sequence") {
    if (!pre.contains("pretokenizers") || !pre["pretokenizers"].is_array())
      fail("pre_tokenizer.pretokenizers", "missing or not an array");
    for (const json& s : pre["pretokenizers"]) steps.push_back(s);
  } else {
    steps.push_back(pre);
  }
  std::vector<SplitRule> rules;
  bool byte_level = false;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const json& s = steps[i];
    const std::string field = "pre_tokenizer.pretokenizers[" + std::to_string(i) + "]";
    const std::string type = s.is_object() ? s.value("type", "") : "";
    if (type == "Split") {
      if (byte_level) fail(field, "Split after ByteLevel is not supported");
      if (s.value("behavior", "") != "Isolated" || s.value("invert", false))
        fail(field, "only behavior Isolated without invert is supported, got " + describe(s));
      if (!s.contains("pattern") || !s["pattern"].is_object() || !s["pattern"].contains("Regex") ||
          !s["pattern"]["Regex"].is_string())
        fail(field + ".pattern", "expected {\"Regex\": ...}");
      try {
        rules.push_back(split_rule_from_regex(s["pattern"]["Regex"]));
      } catch (const Error& e) {
        fail(field + ".pattern", e.what());
      }
    } else if (type == "ByteLevel") {
      if (s.value("add_prefix_space", false)) fail(field, "add_prefix_space=true is not supported");
      if (s.value("use_regex", true)) fail(field, "use_regex=true (the GPT-2 regex) is not supported");
      byte_level = true;
    } else {
      fail(field, "unsupported pre-tokenizer " + describe(s));
    }
  }
  if (!byte_level) fail("pre_tokenizer", "no ByteLevel step (only byte-level BPE is supported)");
  pre_tokenizer = PreTokenizer(std::move(rules));
}

void Tokenizer::Impl::load_added_tokens(const json& list) {
  if (!list.is_array()) fail("added_tokens", "not an array");
  added.reserve(list.size());
  for (std::size_t i = 0; i < list.size(); ++i) {
    const json& t = list[i];
    const std::string field = "added_tokens[" + std::to_string(i) + "]";
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer()) fail(field + ".id", "missing or not an integer");
    if (!t.contains("content") || !t["content"].is_string() || t["content"].get_ref<const std::string&>().empty())
      fail(field + ".content", "missing or empty");
    for (const char* flag : {"lstrip", "rstrip", "single_word"}) {
      if (t.value(flag, false)) fail(field + "." + flag, "true is not supported");
    }
    const auto id = t["id"].get<std::int64_t>();
    if (id < 0 || id > (1 << 24)) fail(field + ".id", "out of range");
    added.push_back(AddedToken{static_cast<TokenId>(id), t["content"], t.value("special", false),
                               t.value("normalized", !t.value("special", false))});
  }
  for (const AddedToken& t : added) {
    const auto id = static_cast<std::size_t>(t.id);
    if (id >= id_bytes.size()) {
      id_bytes.resize(id + 1);
      id_special.resize(id + 1, 0);
    }
    std::string bytes;
    id_bytes[id] = byte_level_to_bytes(t.content, bytes) ? bytes : t.content;
    id_special[id] = t.special;
    token_ids[t.content] = t.id;
    (t.normalized ? normalized_pass : raw_pass).add(&t);
  }
}

void Tokenizer::Impl::split_added(std::string_view text, std::vector<Segment>& out) const {
  out.clear();
  out.push_back(Segment{0, text.size(), -1});
  for (const AddedPass* pass : {&raw_pass, &normalized_pass}) {
    if (pass->empty) continue;
    std::vector<Segment> next;
    for (const Segment& seg : out) {
      if (seg.added_id >= 0) {
        next.push_back(seg);
        continue;
      }
      std::size_t gap = seg.begin;
      for (std::size_t pos = seg.begin; pos < seg.end;) {
        const AddedToken* t = pass->match_at(text.substr(0, seg.end), pos);
        if (!t) {
          ++pos;
          continue;
        }
        if (gap < pos) next.push_back(Segment{gap, pos, -1});
        next.push_back(Segment{pos, pos + t->content.size(), t->id});
        pos += t->content.size();
        gap = pos;
      }
      if (gap < seg.end) next.push_back(Segment{gap, seg.end, -1});
    }
    out.swap(next);
  }
}

void Tokenizer::Impl::bpe_uncached(std::string_view piece, std::vector<TokenId>& out) const {
  struct Symbol {
    TokenId id;
    int prev, next;
  };
  struct Candidate {
    std::uint32_t rank;
    int pos;
    TokenId left, right;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap_storage;
  symbols.clear();
  for (const char c : piece) {
    const TokenId id = byte_ids[static_cast<unsigned char>(c)];
    if (id < 0) continue;
    const int n = static_cast<int>(symbols.size());
    symbols.push_back(Symbol{id, n - 1, n + 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  heap_storage.clear();
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap(
      std::greater<Candidate>(), std::move(heap_storage));
  auto push_pair = [&](int left) {
    if (left < 0) return;
    const int right = symbols[left].next;
    if (right < 0) return;
    if (const auto* e = merges.find(symbols[left].id, symbols[right].id))
      heap.push(Candidate{e->rank, left, symbols[left].id, symbols[right].id});
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) push_pair(i);

  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = symbols[c.pos];
    if (left.id != c.left || left.next < 0) continue;  // stale: this symbol changed since
    Symbol& right = symbols[left.next];
    if (right.id != c.right) continue;
    left.id = merges.find(c.left, c.right)->merged;
    const int removed = left.next;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.pos;
    symbols[removed].id = -1;  // dead
    push_pair(left.prev);
    push_pair(c.pos);
  }
  for (int i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

void Tokenizer::Impl::bpe_piece(std::string_view piece, std::vector<TokenId>& out) const {
  if (piece.size() > 256) {  // long pieces are rare; keep them out of the cache
    bpe_uncached(piece, out);
    return;
  }
  thread_local std::string key;
  key.assign(piece);
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    const auto it = cache.find(key);
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const std::size_t start = out.size();
  bpe_uncached(piece, out);
  std::lock_guard<std::mutex> lock(cache_mutex);
  if (cache.size() >= kCacheLimit) cache.clear();
  cache.emplace(key, std::vector<TokenId>(out.begin() + static_cast<std::ptrdiff_t>(start), out.end()));
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json_text(std::string_view json_text, const std::string& origin) {
  auto impl = std::make_unique<Impl>();
  impl->origin = origin;
  const json root = parse_json_text(json_text, "tokenizer " + origin);
  try {
    impl->load(root);
  } catch (const json::exception& e) {  // a field of the wrong JSON type deep inside
    MEGAMOE_THROW("tokenizer ", origin, ": malformed: ", e.what());
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  return from_json_text(read_input_file(path, kMaxTokenizerBytes), path);
}

namespace {

bool is_ascii_letter_byte(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// End of the next chunk of plain text [begin, end) to pre-tokenize and encode on
// its own: the first "letter, space, letter" position at or after begin + target,
// where the pre-tokenizer always splits (the letter run ends at the space, and
// " y..." starts the next piece whatever came before), so encoding the chunks one
// after another gives exactly the ids of the whole. `end` when there is none.
std::size_t next_chunk_end(std::string_view text, std::size_t begin, std::size_t end, std::size_t target) {
  if (end - begin <= target) return end;
  for (std::size_t p = begin + target; p + 1 < end; ++p) {
    if (text[p] == ' ' && is_ascii_letter_byte(text[p - 1]) && is_ascii_letter_byte(text[p + 1])) return p;
  }
  return end;
}

}  // namespace

void Tokenizer::Impl::check_input(std::string_view text) const {
  MEGAMOE_CHECK(text.size() <= max_input_bytes, "encode: input of ", text.size(), " bytes exceeds the limit of ",
                max_input_bytes, " bytes");
  const std::size_t bad = first_invalid_utf8(text);
  MEGAMOE_CHECK(bad == text.size(), "encode: input is not valid UTF-8 (ill-formed byte 0x", std::hex,
                static_cast<int>(static_cast<unsigned char>(text[bad])), std::dec, " at byte offset ", bad, ")");
}

// Pre-tokenizes and BPE-encodes the plain segments, chunk by chunk, so that the
// working memory beyond the ids stays bounded by the chunk (and by the longest
// pre-tokenizer piece), not by the input.
void Tokenizer::Impl::encode_segments(std::string_view text, const std::vector<Segment>& segments,
                                      std::vector<TokenId>& ids) const {
  constexpr std::size_t kChunkBytes = std::size_t{1} << 16;
  bool chunkable = false;
  for (const SplitRule rule : pre_tokenizer.rules()) chunkable = chunkable || rule == SplitRule::kDeepSeekWords;
  std::vector<std::pair<std::size_t, std::size_t>> pieces;
  for (const Segment& seg : segments) {
    if (seg.added_id >= 0) {
      ids.push_back(seg.added_id);
      continue;
    }
    for (std::size_t begin = seg.begin; begin < seg.end;) {
      const std::size_t end = chunkable ? next_chunk_end(text, begin, seg.end, kChunkBytes) : seg.end;
      const std::string_view part = text.substr(begin, end - begin);
      pre_tokenizer.split(part, pieces);
      for (const auto& [b, e] : pieces) bpe_piece(part.substr(b, e - b), ids);
      begin = end;
    }
  }
}

std::vector<TokenId> Tokenizer::encode(std::string_view text) const {
  const Impl& m = *impl_;
  m.check_input(text);
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 1);
  std::vector<Segment> segments;
  m.split_added(text, segments);
  m.encode_segments(text, segments, ids);
  return ids;
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, std::span<const TextRange> plain) const {
  const Impl& m = *impl_;
  m.check_input(text);
  std::vector<Segment> segments, found;
  std::size_t at = 0;
  auto add_plain = [&](std::size_t b, std::size_t e) {
    if (b >= e) return;
    if (!segments.empty() && segments.back().added_id < 0 && segments.back().end == b) {
      segments.back().end = e;
    } else {
      segments.push_back(Segment{b, e, -1});
    }
  };
  auto add_markup = [&](std::size_t b, std::size_t e) {
    if (b >= e) return;
    m.split_added(text.substr(b, e - b), found);
    for (const Segment& f : found) {
      if (f.added_id >= 0) {
        segments.push_back(Segment{b + f.begin, b + f.end, f.added_id});
      } else {
        add_plain(b + f.begin, b + f.end);
      }
    }
  };
  for (const TextRange& r : plain) {
    MEGAMOE_CHECK(r.begin >= at && r.begin <= r.end && r.end <= text.size(),
                  "encode: plain-text ranges must be sorted, disjoint and inside the text");
    add_markup(at, r.begin);
    add_plain(r.begin, r.end);
    at = r.end;
  }
  add_markup(at, text.size());
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 1);
  m.encode_segments(text, segments, ids);
  return ids;
}

const std::string& Tokenizer::token_bytes(TokenId id) const {
  MEGAMOE_CHECK(id >= 0 && static_cast<std::size_t>(id) < impl_->id_bytes.size(), "token id ", id,
                " out of range [0, ", impl_->id_bytes.size(), ")");
  return impl_->id_bytes[static_cast<std::size_t>(id)];
}

std::string Tokenizer::decode(const std::vector<TokenId>& ids, bool skip_special) const {
  std::string bytes;
  for (const TokenId id : ids) {
    const std::string& b = token_bytes(id);
    if (skip_special && impl_->id_special[static_cast<std::size_t>(id)]) continue;
    bytes += b;
  }
  return utf8_lossy(bytes);
}

std::optional<TokenId> Tokenizer::token_to_id(std::string_view token) const {
  const auto it = impl_->token_ids.find(std::string(token));
  if (it == impl_->token_ids.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::is_special(TokenId id) const {
  return id >= 0 && static_cast<std::size_t>(id) < impl_->id_special.size() && impl_->id_special[static_cast<std::size_t>(id)];
}

std::size_t Tokenizer::vocab_size() const { return impl_->id_bytes.size(); }
const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }

std::vector<std::string> Tokenizer::pre_tokenize(std::string_view text) const {
  MEGAMOE_CHECK(is_valid_utf8(text), "pre_tokenize: input is not valid UTF-8");
  return impl_->pre_tokenizer.split(text);
}

void Tokenizer::set_max_input_bytes(std::size_t n) { impl_->max_input_bytes = n; }
std::size_t Tokenizer::max_input_bytes() const { return impl_->max_input_bytes; }

}  // namespace megamoe::text
