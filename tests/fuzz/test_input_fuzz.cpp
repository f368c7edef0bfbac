// Mutation fuzz of the JSON inputs of issue 14 (built with ASan + UBSan):
// config.json, tokenizer.json and chat message files, at least 10,000 mutated
// inputs each, through the same functions the program uses (strict JSON, then
// parse_model_config / Tokenizer::from_json_text / render_chat + encode). Every
// input must end in a value or a megamoe::Error (no crash, no other exception),
// within a time limit and a memory limit (peak heap bytes, tracked by the
// sanitizer's allocation hooks) per input; an accepted config satisfies every
// range the loader relies on, so nothing accepted here is refused later.
// Deterministic seed; a failing case prints its input (cut short).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/json_file.hpp"
#include "core/model_config.hpp"
#include "text/chat_encoding.hpp"
#include "text/tokenizer.hpp"

// From the sanitizer runtime (<sanitizer/allocator_interface.h>, which GCC does not ship).
extern "C" {
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void*, size_t),
                                              void (*free_hook)(const volatile void*));
size_t __sanitizer_get_allocated_size(const volatile void* p);
}

namespace {

std::atomic<long long> g_current{0}, g_peak{0};

void on_malloc(const volatile void* ptr, size_t size) {
  (void)ptr;
  const long long now = g_current.fetch_add(static_cast<long long>(size)) + static_cast<long long>(size);
  long long peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}
void on_free(const volatile void* ptr) {
  g_current.fetch_sub(static_cast<long long>(__sanitizer_get_allocated_size(ptr)));
}

struct InstallHooks {
  InstallHooks() { __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free); }
} g_hooks;

}  // namespace

namespace megamoe {
namespace {

namespace fs = std::filesystem;
const fs::path kData = fs::path(MEGAMOE_TEST_DATA_DIR);
constexpr int kInputs = 10000;
constexpr double kSecondsPerInput = 5.0;             // ASan on a shared CI machine; real cost is ~1 ms
constexpr long long kFixedHeapBytes = 64ll << 20;    // plus kHeapPerInputByte per input byte
constexpr long long kHeapPerInputByte = 200;

const std::vector<std::string> kNumbers = {"0", "1", "-1", "2", "3", "4", "7", "8", "128", "255", "65536", "1000",
                                           "1001", "2147483647", "2147483648", "4294967296", "9223372036854775807",
                                           "9223372036854775808", "18446744073709551616", "1e308", "1e309", "-1e309",
                                           "1.5", "-0", "0.0", "1e-300", "99999999999999999999999999999"};
const std::vector<std::string> kTokens = {"{", "}", "[", "]", ",", ":", "\"", "null", "true", "false", "{}", "[]",
                                          "\"\"", "\\u0000", "\\ud800", "\xff", "\xc3\x28", " ", "\n", std::string(1, '\0'),
                                          "<\xef\xbd\x9cUser\xef\xbd\x9c>", "<think>", "\"role\"", "\"content\""};

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}
  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng_() % n); }

  std::string mutate(std::string text) {
    const int rounds = 1 + static_cast<int>(below(3));
    for (int r = 0; r < rounds; ++r) {
      switch (below(6)) {
        case 0:  // byte flips
          for (size_t i = 1 + below(4); i > 0 && !text.empty(); --i) text[below(text.size())] = static_cast<char>(below(256));
          break;
        case 1:  // cut or extend
          if (below(2)) {
            text.resize(below(text.size() + 1));
          } else {
            text.insert(below(text.size() + 1), kTokens[below(kTokens.size())]);
          }
          break;
        case 2: {  // a number replaced
          std::vector<size_t> starts;
          for (size_t i = 0; i < text.size(); ++i) {
            if (std::isdigit(static_cast<unsigned char>(text[i])) && (i == 0 || !std::isdigit(static_cast<unsigned char>(text[i - 1]))))
              starts.push_back(i);
          }
          if (starts.empty()) break;
          const size_t at = starts[below(starts.size())];
          size_t end = at;
          while (end < text.size() && (std::isdigit(static_cast<unsigned char>(text[end])) || text[end] == '.')) ++end;
          text.replace(at, end - at, kNumbers[below(kNumbers.size())]);
          break;
        }
        case 3: {  // a span duplicated (duplicate keys, repeated entries)
          if (text.empty()) break;
          const size_t a = below(text.size()), n = 1 + below(std::min<size_t>(200, text.size() - a));
          text.insert(below(text.size() + 1), text.substr(a, n));
          break;
        }
        case 4: {  // deep nesting
          const size_t at = below(text.size() + 1), depth = 1 + below(100);
          text.insert(at, std::string(depth, below(2) ? '[' : '{'));
          break;
        }
        case 5: {  // a value replaced by a big one
          const size_t at = text.find(':', below(text.size() + 1));
          if (at == std::string::npos) break;
          const size_t end = text.find_first_of(",}", at);
          if (end == std::string::npos) break;
          const std::string big = below(2) ? "\"" + std::string(1000 + below(100000), 'x') + "\""
                                           : "[" + std::string(below(2000), '1') + "]";
          text.replace(at + 1, end - at - 1, big);
          break;
        }
      }
    }
    return text;
  }

 private:
  std::mt19937_64 rng_;
};

// Runs `fn` on every input; checks outcome, time and heap per input.
template <typename Fn>
void fuzz(const std::vector<std::string>& seeds, uint64_t seed, Fn&& fn) {
  Mutator mutator(seed);
  int accepted = 0, rejected = 0;
  for (int i = 0; i < kInputs; ++i) {
    const std::string input = mutator.mutate(seeds[mutator.below(seeds.size())]);
    g_peak.store(g_current.load());
    const long long base = g_current.load();
    const auto t0 = std::chrono::steady_clock::now();
    try {
      fn(input);
      ++accepted;
    } catch (const Error&) {
      ++rejected;
    } catch (const std::exception& e) {
      FAIL() << "input " << i << ": not a megamoe::Error: " << e.what() << "\n" << quote_for_message(input, 400);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_LT(seconds, kSecondsPerInput) << "input " << i << " took " << seconds << " s\n" << quote_for_message(input, 400);
    const long long heap = g_peak.load() - base;
    ASSERT_LT(heap, kFixedHeapBytes + kHeapPerInputByte * static_cast<long long>(input.size()))
        << "input " << i << " peaked at " << heap << " heap bytes\n" << quote_for_message(input, 400);
  }
  std::printf("%d inputs: %d accepted, %d rejected with megamoe::Error\n", kInputs, accepted, rejected);
  EXPECT_GT(rejected, 0);
}

std::string read(const fs::path& path) { return read_input_file(path, 1 << 26); }

void expect_config_invariants(const ModelConfig& c) {
  auto in = [](int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; };
  ASSERT_TRUE(in(c.vocab_size, 1, 1 << 24) && in(c.hidden_size, 1, 1 << 16) && in(c.num_layers, 1, 1024));
  ASSERT_TRUE(in(c.num_heads, 1, 1024) && in(c.head_dim, 1, 8192) && c.num_heads % c.o_groups == 0);
  ASSERT_TRUE(in(c.sliding_window, 1, 1 << 20) && in(c.index_topk, 1, 1 << 20) && in(c.hc_sinkhorn_iters, 1, 1000));
  ASSERT_TRUE(in(c.num_experts_per_tok, 1, c.n_routed_experts) && in(c.hc_mult, 1, 64));
  ASSERT_TRUE(c.routed_scaling_factor > 0 && c.hc_eps > 0 && c.rms_norm_eps > 0 && c.swiglu_limit >= 0);
  ASSERT_TRUE(in(c.max_position_embeddings, 1, 1 << 24));
  ASSERT_EQ(static_cast<int64_t>(c.layer_types.size()), c.num_layers);
  ASSERT_EQ(static_cast<int64_t>(c.mlp_types.size()), c.num_layers);
  ASSERT_EQ(static_cast<int64_t>(c.compress_rates.size()), c.num_layers);
  ASSERT_TRUE(c.rope_head_dim > 0 && c.rope_head_dim <= c.head_dim && c.rope_head_dim % 2 == 0);
  ASSERT_TRUE(c.rope_main.theta > 0 && c.rope_compress.theta > 0 && c.rope_compress.factor >= 1);
  ASSERT_TRUE(c.eos_token_id < c.vocab_size && c.bos_token_id < c.vocab_size);
}

TEST(InputFuzz, ConfigJson) {
  std::vector<std::string> seeds;
  for (const char* name : {"flash-upstream.json", "flash-transformers.json", "pro-upstream.json", "tiny-upstream.json",
                           "tiny-transformers.json"})
    seeds.push_back(read(kData / "configs" / name));
  for (const char* name : {"tiny-a", "tiny-b", "tiny-c"}) seeds.push_back(read(kData / name / "config.json"));
  fuzz(seeds, 0xc0f19, [](const std::string& input) {
    const ModelConfig config = parse_model_config(parse_json_text(input, "config.json"), "config.json");
    expect_config_invariants(config);
  });
}

TEST(InputFuzz, TokenizerJson) {
  const std::vector<std::string> seeds = {read(kData / "tiny-tokenizer/tokenizer.json")};
  fuzz(seeds, 0x70c3, [](const std::string& input) {
    const text::Tokenizer tok = text::Tokenizer::from_json_text(input, "tokenizer.json");
    const std::vector<text::TokenId> ids = tok.encode("Hello world <\xef\xbd\x9cUser\xef\xbd\x9c> 123 \xe4\xb8\xad");
    (void)tok.decode(ids);
  });
}

TEST(InputFuzz, ChatFiles) {
  const nlohmann::ordered_json goldens = parse_ordered_json_text(read(kData / "text/chat_goldens.json"), "goldens");
  std::vector<std::string> seeds;
  for (const auto& c : goldens["cases"]) seeds.push_back(c["messages"].dump());
  static const text::Tokenizer tok = text::Tokenizer::from_file((kData / "tiny-tokenizer/tokenizer.json").string());
  fuzz(seeds, 0xc4a7, [](const std::string& input) {
    const nlohmann::ordered_json messages = parse_ordered_json_text(input, "chat.json");
    text::ChatOptions options;
    options.thinking = input.size() % 2 == 0;
    const text::ChatPrompt prompt = text::render_chat(messages, options);
    size_t at = 0;
    for (const text::TextRange& r : prompt.content) {
      ASSERT_TRUE(r.begin >= at && r.begin < r.end && r.end <= prompt.text.size());
      at = r.end;
    }
    try {
      (void)tok.encode(prompt.text, prompt.content);  // may refuse invalid UTF-8 (megamoe::Error)
    } catch (const Error&) {
    }
  });
}

}  // namespace
}  // namespace megamoe
