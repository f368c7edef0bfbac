// `megamoe bench tokenizer`: single-thread encode throughput (MB/s) of the
// tokenizer on English, code, CJK and mixed text, cold (fresh word cache) and
// warm. Inputs: --input FILE (repeatable) or a built-in synthetic mix.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/command.hpp"
#include "core/input_file.hpp"
#include "core/error.hpp"
#include "text/tokenizer.hpp"

namespace {

using megamoe::text::Tokenizer;

// Deterministic text of roughly `bytes` bytes from a word pool.
std::string synthesize(const std::vector<std::string>& words, const char* sep, std::size_t bytes, unsigned seed) {
  std::mt19937 rng(seed);
  std::string out;
  while (out.size() < bytes) {
    out += words[rng() % words.size()];
    out += (rng() % 12 == 0) ? ".\n" : sep;
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> builtin_inputs(std::size_t bytes) {
  const std::vector<std::string> english = {
      "the", "of", "and", "to", "in", "is", "was", "that", "for", "it", "with", "as", "his", "on", "be", "at",
      "by", "had", "are", "but", "from", "or", "have", "an", "they", "which", "one", "you", "were", "all", "we",
      "information", "government", "development", "international", "understanding", "throughput", "tokenizer",
      "DeepSeek", "inference", "Hopper", "experts", "quantization", "language", "model", "weights", "2024",
      "Mr.", "Smith's", "(see", "below)", "e.g.,", "U.S.", "don't", "it's", "3.14", "100%", "$5", "naïve", "café"};
  const std::vector<std::string> code = {
      "int", "i", "=", "0;", "for", "(auto&", "x", ":", "xs)", "{", "}", "return", "std::vector<float>", "->",
      "self.weight", "def", "forward(self,", "x):", "if", "else:", "#include", "<cstdio>", "0x1F", "/*", "*/",
      "//", "TODO", "nullptr", "==", "!=", "&&", "||", "\n    ", "\n\t", "json.dumps(obj)", "f\"{name}\""};
  const std::vector<std::string> cjk = {"深度求索", "的", "模型", "推理", "引擎", "中文", "测试", "文本", "こんにちは",
                                        "トークン", "한국어", "텍스트", "，", "。", "数据", "量化", "专家", "混合"};
  const std::string en = synthesize(english, " ", bytes, 1);
  const std::string co = synthesize(code, " ", bytes, 2);
  const std::string zh = synthesize(cjk, "", bytes, 3);
  std::string mixed;
  for (std::size_t i = 0; mixed.size() < bytes; ++i) {
    const std::string& src = i % 3 == 0 ? en : i % 3 == 1 ? co : zh;
    const std::size_t at = (i * 7919) % (src.size() - 4096);
    std::size_t end = at + 2048;
    while (end < src.size() && (static_cast<unsigned char>(src[end]) & 0xC0) == 0x80) ++end;  // whole characters
    std::size_t begin = at;
    while ((static_cast<unsigned char>(src[begin]) & 0xC0) == 0x80) ++begin;
    mixed += src.substr(begin, end - begin);
  }
  return {{"english (synthetic)", en}, {"code (synthetic)", co}, {"cjk (synthetic)", zh}, {"mixed (synthetic)", mixed}};
}

int run_bench(int argc, char** argv) {
  CLI::App app{"measure single-thread tokenizer encode throughput", argv[0]};
  std::string tokenizer_path;
  std::vector<std::string> inputs;
  double megabytes = 4.0;
  app.add_option("--tokenizer", tokenizer_path, "Hugging Face tokenizer.json")->required();
  app.add_option("--input", inputs, "text files to encode (default: built-in synthetic English/code/CJK/mixed)");
  app.add_option("--mb", megabytes, "size of each synthetic input in MB");
  CLI11_PARSE(app, argc, argv);

  std::vector<std::pair<std::string, std::string>> texts;
  for (const std::string& path : inputs) {
    texts.emplace_back(path, megamoe::read_input_file(path, Tokenizer::kDefaultMaxInputBytes));
  }
  if (texts.empty()) texts = builtin_inputs(static_cast<std::size_t>(megabytes * 1e6));

  std::printf("%-28s %10s %10s %12s %12s\n", "input", "MB", "tokens", "cold MB/s", "warm MB/s");
  for (const auto& [name, text] : texts) {
    double rates[2] = {0, 0};
    std::size_t tokens = 0;
    Tokenizer tokenizer = Tokenizer::from_file(tokenizer_path);  // fresh word cache per input
    for (int pass = 0; pass < 2; ++pass) {
      const auto t0 = std::chrono::steady_clock::now();
      tokens = tokenizer.encode(text).size();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      rates[pass] = text.size() / 1e6 / s;
    }
    std::printf("%-28s %10.2f %10zu %12.1f %12.1f\n", name.c_str(), text.size() / 1e6, tokens, rates[0], rates[1]);
  }
  return 0;
}

const megamoe::cli::BenchRegistration kBench{"tokenizer", "tokenizer encode throughput (MB/s, one core)", run_bench};

}  // namespace
