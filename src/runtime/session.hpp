// Running a DeepSeek-V4 model over one sequence: logits in the three
// equivalent modes (full prefill, chunked prefill, token-by-token decode) and
// generation (prefill the prompt, then one-token decode steps with the
// per-sequence state of dsv4-architecture.md §9).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "model/deepseek_v4/model.hpp"
#include "runtime/sampler.hpp"

namespace megamoe {

struct LogitsMode {
  enum Kind { kPrefill, kDecode, kChunked } kind = kPrefill;
  int64_t chunk = 0;  // tokens per call for kChunked
  // "prefill", "decode" or "chunked:N"; throws naming the bad value.
  static LogitsMode parse(const std::string& text);
};

// Logits [T, V] for ids (T = ids.size()) computed in the given mode from a fresh state.
std::vector<float> compute_logits(const dsv4::Model& model, std::span<const int32_t> ids, const LogitsMode& mode,
                                  const dsv4::DumpFn* dump = nullptr);

struct GenerateOptions {
  int64_t max_new_tokens = 16;
  SamplingParams sampling;
  bool stop_at_eos = true;  // stop after the config's eos_token_id
  bool decode_graph = true;  // replay recorded decode steps where the backend records (cuda)
};

// Prefills `prompt`, then decodes one token at a time until max_new_tokens,
// EOS (if options.stop_at_eos) or on_token returning false (e.g. a stop string
// completed). Returns the generated ids (not including the prompt).
std::vector<int32_t> generate(const dsv4::Model& model, std::span<const int32_t> prompt,
                              const GenerateOptions& options,
                              const std::function<bool(int32_t)>& on_token = nullptr);

}  // namespace megamoe
