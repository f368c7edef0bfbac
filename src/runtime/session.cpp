#include "runtime/session.hpp"

#include <algorithm>
#include <cstring>

#include "core/error.hpp"

namespace megamoe {

LogitsMode LogitsMode::parse(const std::string& text) {
  if (text == "prefill") return {kPrefill, 0};
  if (text == "decode") return {kDecode, 1};
  const std::string prefix = "chunked:";
  if (text.rfind(prefix, 0) == 0) {
    const std::string n = text.substr(prefix.size());
    MEGAMOE_CHECK(!n.empty() && n.size() <= 9 && std::all_of(n.begin(), n.end(), ::isdigit) && std::stoll(n) > 0,
                  "--mode ", text, ": the chunk size must be a positive integer (chunked:N)");
    return {kChunked, std::stoll(n)};
  }
  MEGAMOE_THROW("--mode '", text, "' is not one of prefill, decode, chunked:N");
}

std::vector<float> compute_logits(const dsv4::Model& model, std::span<const int32_t> ids, const LogitsMode& mode,
                                  const dsv4::DumpFn* dump) {
  MEGAMOE_CHECK(!ids.empty(), "no token ids given (empty input)");
  dsv4::SequenceState state = model.new_sequence();
  dsv4::ForwardOptions options;
  options.dump = dump;
  if (mode.kind == LogitsMode::kPrefill) return model.forward(ids, state, options);
  const size_t step = mode.kind == LogitsMode::kDecode ? 1 : static_cast<size_t>(mode.chunk);
  MEGAMOE_CHECK(step > 0, "chunk size must be positive");
  std::vector<float> logits;
  logits.reserve(ids.size() * static_cast<size_t>(model.config().vocab_size));
  for (size_t begin = 0; begin < ids.size(); begin += step) {
    const size_t count = std::min(step, ids.size() - begin);
    const std::vector<float> part = model.forward(ids.subspan(begin, count), state, options);
    logits.insert(logits.end(), part.begin(), part.end());
  }
  return logits;
}

std::vector<int32_t> generate(const dsv4::Model& model, std::span<const int32_t> prompt,
                              const GenerateOptions& options, const std::function<bool(int32_t)>& on_token) {
  MEGAMOE_CHECK(!prompt.empty(), "no prompt token ids given (empty input)");
  MEGAMOE_CHECK(options.max_new_tokens >= 0, "max_new_tokens must be >= 0, got ", options.max_new_tokens);
  Sampler sampler(options.sampling);
  dsv4::SequenceState state = model.new_sequence();
  dsv4::ForwardOptions forward_options;
  forward_options.last_logits_only = true;
  std::vector<int32_t> out;
  if (options.max_new_tokens == 0) return out;
  // The prompt's last logits come back for the first choice; after that each
  // decode step chooses on the device from the sampler's next draw.
  int32_t next = sampler.sample(model.forward(prompt, state, forward_options));
  dsv4::DecodeOptions decode_options;
  decode_options.graph = options.decode_graph;
  while (true) {
    out.push_back(next);
    if (on_token && !on_token(next)) break;
    if (options.stop_at_eos && next == model.config().eos_token_id) break;
    if (static_cast<int64_t>(out.size()) == options.max_new_tokens) break;
    dsv4::DecodeInput input{next, &state, {}};
    const SamplingParams& p = sampler.params();
    input.sample = {p.temperature, p.top_k, p.top_p, p.temperature > 0 ? sampler.next_uniform() : 0.0};
    next = model.decode({&input, 1}, decode_options).front();
  }
  return out;
}

}  // namespace megamoe
