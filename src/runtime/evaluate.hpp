// Perplexity of a model on held-out text, by the protocol of the demo model's
// training script (tools/train_demo_model.py: tokenize_docs, mean_nll), so our
// numbers and transformers' (tools/eval_demo_transformers.py) are comparable:
//   - documents are the pieces of the text between blank lines ("\n\n"), each
//     BOS + ids + EOS in one stream;
//   - window j is BOS + stream[j W, (j + 1) W) for j < (len - 1) / W;
//   - the BOS position is not scored and neither is the first token after it
//     (logits rows 1 .. W - 1 predict ids 2 .. W): W - 1 scored tokens a window.
// Optionally a reference model runs on the same windows: the mean KL
// divergence KL(reference || model) per scored token and the top-1 agreement
// (how much a quantized model departs from its BF16 original).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "model/deepseek_v4/model.hpp"
#include "text/tokenizer.hpp"

namespace megamoe {

inline constexpr std::size_t kMaxEvalTextBytes = std::size_t{256} << 20;  // --text files

// The documents of `text` as one stream, each BOS + ids + EOS. Documents are
// the pieces of Python's text.split("\n\n"); pieces of only whitespace are
// skipped (as `if doc.strip()`). Throws on invalid UTF-8 and when no document
// has text.
std::vector<int32_t> tokenize_documents(const text::Tokenizer& tokenizer, std::string_view text, int32_t bos,
                                        int32_t eos);

// The evaluation windows of a stream (each BOS + W stream tokens), at most
// max_windows of them when max_windows > 0. Throws when window < 2 (no scored
// token) or the stream holds no whole window.
std::vector<std::vector<int32_t>> make_eval_windows(std::span<const int32_t> stream, int32_t bos, int64_t window,
                                                    int64_t max_windows = 0);

struct EvalOptions {
  int64_t batch = 1;  // windows per forward: one batched step of `batch` fresh sequences
  std::function<void(int64_t windows_done, int64_t windows_total)> progress;  // after each batch
};

struct EvalScores {
  std::vector<double> window_nll;  // per window: sum of -log p(target) over its scored positions
  double mean_nll = 0.0;           // over all scored tokens
  double ppl = 0.0;                // exp(mean_nll)
};

struct EvalReport {
  int64_t windows = 0;
  int64_t tokens_scored = 0;
  EvalScores model;
  // With a reference model:
  std::optional<EvalScores> reference;
  double mean_kl = 0.0;         // KL(reference || model) per scored token, in nats
  double top1_agreement = 0.0;  // fraction of scored positions where both argmaxes agree (ties: lower id)
};

// Scores every window (at least 3 ids each: BOS and two tokens) with fresh
// sequence states, `options.batch` windows per forward; the log-softmax and
// every sum in double. reference: a second model on the same windows, with
// the same vocabulary. Throws on bad arguments (an empty or short window, an
// id outside the vocabulary, a batch the backend cannot hold in one step,
// another vocabulary) before any forward, and on a non-finite logit.
EvalReport evaluate(const dsv4::Model& model, std::span<const std::vector<int32_t>> windows,
                    const EvalOptions& options = {}, const dsv4::Model* reference = nullptr);

}  // namespace megamoe
