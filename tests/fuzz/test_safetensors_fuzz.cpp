// Randomized-mutation test of the safetensors header parser (built with
// ASan + UBSan). Valid headers are mutated by byte flips, truncations and
// extensions, numeric field perturbations, dtype swaps and structural JSON
// edits; every outcome must be either a table that satisfies the format's
// invariants or a megamoe::Error — never a crash, a sanitizer report, or
// another exception type. Deterministic seed; a failing case prints its header.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/safetensors.hpp"

namespace megamoe {
namespace {

constexpr uint64_t kSeed = 0x5afe7e45;
constexpr int kHeaderMutations = 20000;  // through parse_header
constexpr int kFileMutations = 1500;     // through open() on a temp file

struct Seed {
  std::string header;
  size_t data_size;
};

// Valid headers covering every dtype, scalars, empty tensors, metadata and several tensors.
std::vector<Seed> make_seeds() {
  const std::vector<std::pair<std::string, size_t>> dtypes = {{"F32", 4}, {"F16", 2},    {"BF16", 2}, {"F8_E4M3", 1},
                                                              {"F8_E8M0", 1}, {"U8", 1}, {"I8", 1},   {"I32", 4},
                                                              {"I64", 8}, {"BOOL", 1}};
  std::vector<Seed> seeds;
  std::mt19937_64 rng(kSeed);
  for (int s = 0; s < 12; ++s) {
    nlohmann::json header = nlohmann::json::object();
    if (s % 3 == 0) header["__metadata__"] = {{"format", "pt"}, {"producer", "seed" + std::to_string(s)}};
    uint64_t offset = 0;
    const int count = 1 + s % 6;
    for (int t = 0; t < count; ++t) {
      const auto& [dtype, size] = dtypes[(s + t) % dtypes.size()];
      std::vector<uint64_t> shape;
      const int rank = static_cast<int>(rng() % 4);  // 0 = scalar
      uint64_t numel = 1;
      for (int r = 0; r < rank; ++r) {
        shape.push_back(rng() % 7);  // zeros included
        numel *= shape.back();
      }
      const uint64_t bytes = numel * size;
      header["layers." + std::to_string(t) + ".attn.wq_a.weight"] = {
          {"dtype", dtype}, {"shape", shape}, {"data_offsets", {offset, offset + bytes}}};
      offset += bytes + (s % 2) * 3;  // some seeds leave gaps
    }
    seeds.push_back({header.dump(), static_cast<size_t>(offset)});
  }
  return seeds;
}

const std::vector<std::string> kInterestingNumbers = {
    "0", "1", "-1", "2", "7", "8", "255", "256", "65535", "4294967295", "4294967296", "9223372036854775807",
    "9223372036854775808", "18446744073709551615", "18446744073709551616", "281474976710656",
    "99999999999999999999999999", "1.5", "-0", "1e3", "1e308", "1e309", "-1e309", "NaN", "0x10", "00", "01"};
const std::vector<std::string> kStructuralTokens = {
    "{", "}", "[", "]", ",", ":", "\"", "null", "true", "false", "{}", "[]", "\"\"", "\"__metadata__\"",
    "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\\", "\\u0000", "\\ud800", "\xff", "\xc3\x28", " ", "\n"};
const std::vector<std::string> kDtypes = {"F32", "F16", "BF16", "F8_E4M3", "F8_E8M0", "U8", "I8", "I32", "I64",
                                          "BOOL", "F64", "F4", "", "f32", "F8_E5M2", "U64", "C64"};

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng_() % n); }
  template <typename T>
  const T& pick(const std::vector<T>& items) { return items[below(items.size())]; }

  std::string mutate(std::string text) {
    const int rounds = 1 + static_cast<int>(below(4));
    for (int r = 0; r < rounds; ++r) {
      switch (below(7)) {
        case 0: flip_bytes(text); break;
        case 1: truncate_or_extend(text); break;
        case 2: perturb_number(text); break;
        case 3: swap_dtype(text); break;
        case 4: structural_edit(text); break;
        case 5: duplicate_span(text); break;
        case 6: nest_deeply(text); break;
      }
    }
    return text;
  }

  size_t mutate_data_size(size_t size) {
    switch (below(5)) {
      case 0: return 0;
      case 1: return size > 0 ? size - 1 - below(size) / 2 : 0;
      case 2: return size + 1 + below(64);
      default: return size;
    }
  }

 private:
  void flip_bytes(std::string& text) {
    if (text.empty()) return;
    const size_t flips = 1 + below(8);
    for (size_t i = 0; i < flips; ++i) {
      char& c = text[below(text.size())];
      c = below(2) ? static_cast<char>(c ^ (1 << below(8))) : static_cast<char>(below(256));
    }
  }
  void truncate_or_extend(std::string& text) {
    if (below(3) == 0) {
      for (size_t i = below(16); i > 0; --i) text.push_back(static_cast<char>(below(256)));
    } else {
      text.resize(below(text.size() + 1));
    }
  }
  void perturb_number(std::string& text) {
    std::vector<std::pair<size_t, size_t>> runs;  // digit runs
    for (size_t i = 0; i < text.size();) {
      if (std::isdigit(static_cast<unsigned char>(text[i]))) {
        size_t j = i;
        while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j]))) ++j;
        runs.emplace_back(i, j - i);
        i = j;
      } else {
        ++i;
      }
    }
    if (runs.empty()) return;
    const auto [at, length] = pick(runs);
    std::string replacement;
    if (below(2)) {
      replacement = pick(kInterestingNumbers);
    } else {  // nudge the value by a little
      const long long value = std::atoll(text.substr(at, std::min<size_t>(length, 18)).c_str());
      replacement = std::to_string(value + static_cast<long long>(below(9)) - 4);
    }
    text.replace(at, length, replacement);
  }
  void swap_dtype(std::string& text) {
    const size_t at = text.find("\"dtype\":\"", below(text.size() + 1));
    const size_t start = at == std::string::npos ? text.find("\"dtype\":\"") : at;
    if (start == std::string::npos) return;
    const size_t value = start + 9;
    const size_t end = text.find('"', value);
    if (end == std::string::npos) return;
    text.replace(value, end - value, pick(kDtypes));
  }
  void structural_edit(std::string& text) {
    const size_t at = below(text.size() + 1);
    switch (below(3)) {
      case 0: text.insert(at, pick(kStructuralTokens)); break;
      case 1:
        if (!text.empty()) text.erase(at == text.size() ? at - 1 : at, 1 + below(4));
        break;
      case 2: {  // replace a JSON value start with another token
        const size_t colon = text.find(':', at);
        if (colon != std::string::npos && colon + 1 < text.size()) text.insert(colon + 1, pick(kStructuralTokens));
        break;
      }
    }
  }
  void duplicate_span(std::string& text) {
    if (text.size() < 2) return;
    const size_t from = below(text.size());
    const size_t length = 1 + below(std::min<size_t>(64, text.size() - from));
    text.insert(below(text.size() + 1), text.substr(from, length));
  }
  void nest_deeply(std::string& text) {
    const size_t depth = 1 + below(2000);
    const size_t at = below(text.size() + 1);
    const bool close = below(2);
    text.insert(at, std::string(depth, below(2) ? '[' : '{') + (close ? std::string(depth, ']') : ""));
  }

  std::mt19937_64 rng_;
};

// A successful parse must give a table that satisfies the format's invariants.
void check_table(const std::map<std::string, TensorView>& table, size_t data_size, const std::string& header) {
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, view] : table) {
    ASSERT_FALSE(name.empty()) << header;
    ASSERT_NE(name, "__metadata__") << header;
    uint64_t numel = 1;
    for (int64_t d : view.shape) {
      ASSERT_GE(d, 0) << header;
      ASSERT_FALSE(__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) << header;
    }
    ASSERT_EQ(numel * dtype_size(view.dtype), view.nbytes) << header;
    ASSERT_LE(view.data_offset + view.nbytes, data_size) << header;
    if (view.nbytes > 0) ranges.emplace_back(view.data_offset, view.data_offset + view.nbytes);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) ASSERT_LE(ranges[i - 1].second, ranges[i].first) << header;
}

TEST(SafetensorsFuzz, SeedsAreValid) {
  for (const Seed& seed : make_seeds()) {
    const auto table = SafetensorsFile::parse_header(seed.header, seed.data_size, "seed");
    EXPECT_FALSE(table.empty());
    check_table(table, seed.data_size, seed.header);
  }
}

TEST(SafetensorsFuzz, MutatedHeadersParseOrThrowError) {
  const auto start = std::chrono::steady_clock::now();
  const std::vector<Seed> seeds = make_seeds();
  Mutator mutator(kSeed);
  int accepted = 0, rejected = 0;
  for (int i = 0; i < kHeaderMutations; ++i) {
    const Seed& seed = mutator.pick(seeds);
    const std::string header = mutator.mutate(seed.header);
    const size_t data_size = mutator.mutate_data_size(seed.data_size);
    try {
      const auto table = SafetensorsFile::parse_header(header, data_size, "fuzz");
      check_table(table, data_size, header);
      ++accepted;
    } catch (const Error&) {
      ++rejected;
    } catch (const std::exception& e) {
      FAIL() << "iteration " << i << ": non-megamoe exception " << e.what() << " for header: " << header;
    }
    if (HasFatalFailure()) FAIL() << "iteration " << i;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("parse_header: %d mutated headers, %d accepted, %d rejected, %.2f s\n", kHeaderMutations, accepted,
              rejected, seconds);
  // Both outcomes must actually occur, or the mutator is not exercising the parser.
  EXPECT_GT(accepted, kHeaderMutations / 50);
  EXPECT_GT(rejected, kHeaderMutations / 2);
}

TEST(SafetensorsFuzz, MutatedFilesOpenOrThrowError) {
  const auto start = std::chrono::steady_clock::now();
  const auto path = std::filesystem::temp_directory_path() / "megamoe_fuzz.safetensors";
  const std::vector<Seed> seeds = make_seeds();
  Mutator mutator(kSeed + 1);
  int accepted = 0, rejected = 0;
  for (int i = 0; i < kFileMutations; ++i) {
    const Seed& seed = mutator.pick(seeds);
    const std::string header = mutator.mutate(seed.header);
    const size_t data_size = mutator.mutate_data_size(seed.data_size);
    uint64_t length = header.size();
    switch (mutator.below(8)) {  // sometimes lie in the length field
      case 0: length += 1 + mutator.below(100); break;
      case 1: length = length > 0 ? mutator.below(length) : 0; break;
      case 2: length = ~uint64_t{0} - mutator.below(16); break;
      default: break;
    }
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      uint64_t n = length;
      for (int b = 0; b < 8; ++b, n >>= 8) out.put(static_cast<char>(n & 0xff));
      out << header;
      for (size_t b = 0; b < data_size; ++b) out.put(static_cast<char>(b * 131));
      if (mutator.below(6) == 0) {  // or cut the file anywhere
        out.close();
        std::filesystem::resize_file(path, mutator.below(std::filesystem::file_size(path) + 1));
      }
    }
    try {
      const auto file = SafetensorsFile::open(path);
      const size_t real_data = std::filesystem::file_size(path) - 8 - length;
      check_table(file->tensors(), real_data, header);
      uint64_t checksum = 0;  // touch every byte of every view: must stay inside the mapping
      for (const auto& [name, view] : file->tensors()) {
        ASSERT_EQ(view.file, &file->path());
        for (size_t b = 0; b < view.nbytes; ++b) checksum += static_cast<unsigned char>(view.data[b]);
      }
      volatile uint64_t sink = checksum;
      (void)sink;
      ++accepted;
    } catch (const Error& e) {
      ASSERT_EQ(std::string(e.what()).rfind(path.string() + ": ", 0), 0u) << e.what();
      ++rejected;
    } catch (const std::exception& e) {
      FAIL() << "iteration " << i << ": non-megamoe exception " << e.what() << " for header: " << header;
    }
    if (HasFatalFailure()) FAIL() << "iteration " << i;
  }
  std::filesystem::remove(path);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("open: %d mutated files, %d accepted, %d rejected, %.2f s\n", kFileMutations, accepted, rejected,
              seconds);
  EXPECT_GT(accepted, 0);
  EXPECT_GT(rejected, kFileMutations / 2);
}

}  // namespace
}  // namespace megamoe
