#include "runtime/evaluate.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "core/thread_pool.hpp"
#include "text/unicode.hpp"

namespace megamoe {
namespace {

// Python's str.isspace: the Unicode White_Space property plus the separators
// U+001C..U+001F (bidirectional classes B and S).
bool python_blank(std::string_view piece) {
  for (std::size_t pos = 0; pos < piece.size();) {
    char32_t cp = 0;
    pos += text::decode_utf8(piece, pos, cp);
    const bool space = (text::char_class(cp) & text::kWhiteSpace) != 0 || (cp >= 0x1C && cp <= 0x1F);
    if (!space) return false;
  }
  return true;
}

// One row of logits as log-probabilities, in double.
void log_softmax(const float* logits, int64_t v, std::vector<double>& out) {
  out.resize(static_cast<std::size_t>(v));
  double max = -INFINITY;
  for (int64_t i = 0; i < v; ++i) {
    MEGAMOE_CHECK(std::isfinite(logits[i]), "evaluate: the model produced a non-finite logit (", logits[i],
                  ") for token id ", i);
    max = std::max(max, static_cast<double>(logits[i]));
  }
  double sum = 0.0;
  for (int64_t i = 0; i < v; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  const double lse = max + std::log(sum);
  for (int64_t i = 0; i < v; ++i) out[i] = static_cast<double>(logits[i]) - lse;
}

int64_t argmax(const std::vector<double>& row) {  // ties: the lower id, as greedy sampling
  return std::max_element(row.begin(), row.end()) - row.begin();
}

// What one window contributes.
struct WindowScore {
  double nll = 0.0, reference_nll = 0.0, kl = 0.0;
  int64_t top1_agree = 0;
};

// Rows 1 .. T-2 of the window's logits [T, V] predict ids 2 .. T-1.
WindowScore score_window(std::span<const int32_t> ids, const std::vector<float>& logits,
                         const std::vector<float>* reference_logits, int64_t v) {
  WindowScore s;
  std::vector<double> lp, lq;
  for (std::size_t r = 1; r + 1 < ids.size(); ++r) {
    const int32_t target = ids[r + 1];
    log_softmax(logits.data() + r * v, v, lp);
    s.nll -= lp[target];
    if (reference_logits == nullptr) continue;
    log_softmax(reference_logits->data() + r * v, v, lq);
    s.reference_nll -= lq[target];
    double kl = 0.0;
    for (int64_t i = 0; i < v; ++i) kl += std::exp(lq[i]) * (lq[i] - lp[i]);
    s.kl += kl;
    s.top1_agree += argmax(lp) == argmax(lq) ? 1 : 0;
  }
  return s;
}

// Every window fits the model, and a batch of them one step of its backend.
void check_windows(const dsv4::Model& model, std::span<const std::vector<int32_t>> windows, int64_t batch,
                   const char* which) {
  const BackendOptions& b = model.backend().options();
  MEGAMOE_CHECK(b.max_sequences >= batch, "evaluate: a batch of ", batch, " windows needs ", batch,
                " sequence slots; the ", which, "'s backend has max_sequences = ", b.max_sequences);
  int64_t longest = 0;
  for (const auto& w : windows) longest = std::max<int64_t>(longest, static_cast<int64_t>(w.size()));
  MEGAMOE_CHECK(b.max_step_rows <= 0 || batch * longest <= b.max_step_rows, "evaluate: a batch of ", batch,
                " windows of ", longest, " tokens is ", batch * longest, " rows; the ", which,
                "'s backend takes at most max_step_rows = ", b.max_step_rows, " in one step");
  const ModelConfig& c = model.config();
  MEGAMOE_CHECK(c.max_position_embeddings <= 0 || longest <= c.max_position_embeddings, "evaluate: a window of ",
                longest, " tokens exceeds the ", which, "'s max_position_embeddings = ", c.max_position_embeddings);
  MEGAMOE_CHECK(b.max_context <= 0 || longest <= b.max_context, "evaluate: a window of ", longest,
                " tokens exceeds the ", which, "'s backend max_context = ", b.max_context);
}

EvalScores scores_of(std::vector<double> window_nll, int64_t tokens) {
  EvalScores s;
  double total = 0.0;
  for (double x : window_nll) total += x;
  s.window_nll = std::move(window_nll);
  s.mean_nll = total / static_cast<double>(tokens);
  s.ppl = std::exp(s.mean_nll);
  return s;
}

// Logits [T_i, V] of each window of the batch, each from a fresh state.
std::vector<std::vector<float>> batch_logits(const dsv4::Model& model, std::span<const std::vector<int32_t>> batch) {
  std::vector<dsv4::SequenceState> states;
  std::vector<dsv4::SequenceInput> inputs;
  states.reserve(batch.size());
  for (const auto& w : batch) {
    states.push_back(model.new_sequence());
    inputs.push_back({w, &states.back()});
  }
  return model.forward_batch(inputs);
}

}  // namespace

std::vector<int32_t> tokenize_documents(const text::Tokenizer& tokenizer, std::string_view text, int32_t bos,
                                        int32_t eos) {
  const std::size_t bad = text::first_invalid_utf8(text);
  MEGAMOE_CHECK(bad == text.size(), "the text is not valid UTF-8 (ill-formed byte at offset ", bad, ")");
  std::vector<int32_t> stream;
  for (std::size_t begin = 0; begin <= text.size();) {
    const std::size_t end = std::min(text.find("\n\n", begin), text.size());
    const std::string_view doc = text.substr(begin, end - begin);
    if (!python_blank(doc)) {
      stream.push_back(bos);
      const std::vector<text::TokenId> ids = tokenizer.encode(doc);
      stream.insert(stream.end(), ids.begin(), ids.end());
      stream.push_back(eos);
    }
    begin = end + 2;
  }
  MEGAMOE_CHECK(!stream.empty(), "the text has no document (it is empty or only whitespace)");
  return stream;
}

std::vector<std::vector<int32_t>> make_eval_windows(std::span<const int32_t> stream, int32_t bos, int64_t window,
                                                    int64_t max_windows) {
  MEGAMOE_CHECK(window >= 2, "evaluation window ", window, " is too short: it must be >= 2 (BOS and the first token ",
                "after it are not scored)");
  const int64_t len = static_cast<int64_t>(stream.size());
  int64_t n = len > 0 ? (len - 1) / window : 0;  // as mean_nll: the stream's last token never starts a window
  MEGAMOE_CHECK(n > 0, "the token stream of ", len, " ids holds no whole evaluation window of ", window,
                " tokens (it needs at least ", window + 1, ")");
  if (max_windows > 0) n = std::min(n, max_windows);
  std::vector<std::vector<int32_t>> windows;
  for (int64_t j = 0; j < n; ++j) {
    std::vector<int32_t> w{bos};
    w.insert(w.end(), stream.begin() + j * window, stream.begin() + (j + 1) * window);
    windows.push_back(std::move(w));
  }
  return windows;
}

EvalReport evaluate(const dsv4::Model& model, std::span<const std::vector<int32_t>> windows,
                    const EvalOptions& options, const dsv4::Model* reference) {
  MEGAMOE_CHECK(!windows.empty(), "evaluate: no windows");
  MEGAMOE_CHECK(options.batch >= 1, "evaluate: batch ", options.batch, " must be >= 1");
  const int64_t v = model.config().vocab_size;
  EvalReport report;
  report.windows = static_cast<int64_t>(windows.size());
  for (std::size_t j = 0; j < windows.size(); ++j) {
    MEGAMOE_CHECK(windows[j].size() >= 3, "evaluate: window ", j, " has ", windows[j].size(),
                  " ids; it needs at least 3 (BOS, an unscored first token, a scored one)");
    for (int32_t id : windows[j])
      MEGAMOE_CHECK(id >= 0 && id < v, "evaluate: token id ", id, " in window ", j, " is outside the vocabulary [0, ",
                    v, ")");
    report.tokens_scored += static_cast<int64_t>(windows[j].size()) - 2;
  }
  const int64_t batch = std::min<int64_t>(options.batch, report.windows);
  check_windows(model, windows, batch, "model");
  if (reference != nullptr) {
    MEGAMOE_CHECK(reference->config().vocab_size == v, "evaluate: the reference's vocab_size ",
                  reference->config().vocab_size, " differs from the model's ", v,
                  "; logits over different vocabularies cannot be compared");
    check_windows(*reference, windows, batch, "reference");
  }

  std::vector<WindowScore> scores(windows.size());
  for (int64_t first = 0; first < report.windows; first += batch) {
    const auto part = windows.subspan(first, std::min(batch, report.windows - first));
    const auto logits = batch_logits(model, part);
    std::vector<std::vector<float>> reference_logits;
    if (reference != nullptr) reference_logits = batch_logits(*reference, part);
    ThreadPool::global().parallel_for(part.size(), [&](std::size_t begin, std::size_t end) {
      for (std::size_t i = begin; i < end; ++i)
        scores[first + i] = score_window(part[i], logits[i], reference ? &reference_logits[i] : nullptr, v);
    });
    if (options.progress) options.progress(first + static_cast<int64_t>(part.size()), report.windows);
  }

  // Sums in window order, so the numbers never depend on the thread count.
  std::vector<double> nll, reference_nll;
  double kl = 0.0;
  int64_t agree = 0;
  for (const WindowScore& s : scores) {
    nll.push_back(s.nll);
    reference_nll.push_back(s.reference_nll);
    kl += s.kl;
    agree += s.top1_agree;
  }
  report.model = scores_of(std::move(nll), report.tokens_scored);
  if (reference != nullptr) {
    report.reference = scores_of(std::move(reference_nll), report.tokens_scored);
    report.mean_kl = kl / static_cast<double>(report.tokens_scored);
    report.top1_agreement = static_cast<double>(agree) / static_cast<double>(report.tokens_scored);
  }
  return report;
}

}  // namespace megamoe
