// `megamoe eval`: perplexity of a model on held-out text by the demo model's
// protocol (src/runtime/evaluate.hpp), and with --reference the mean KL
// divergence KL(reference || model) and top-1 agreement against a second
// model on the same windows (e.g. an NVFP4 model against its BF16 original).
//   --model DIR --tokenizer tokenizer.json --text FILE | --ids-file F
//   [--window 256] [--max-windows N] [--batch B] [--device cpu|cuda|auto]
//   [--reference DIR] [--w4a4] [--kv-fp8] [--json FILE]
// The summary goes to stdout, progress to stderr, every number to --json.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/command.hpp"
#include "cli/options.hpp"
#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/model_config.hpp"
#include "model/deepseek_v4/model.hpp"
#include "runtime/evaluate.hpp"
#include "runtime/token_ids.hpp"
#include "text/tokenizer.hpp"

namespace {

struct Args {
  std::string model_dir, reference_dir, tokenizer_path, text_path, ids_file, json_path, device = "auto";
  std::string window = "256", max_windows = "0", batch = "8";
  bool w4a4 = false, kv_fp8 = false;
};

megamoe::ModelConfig config_of(const std::string& dir) {
  return megamoe::load_model_config((std::filesystem::path(dir) / "config.json").string());
}

// The evaluation stream: the text tokenized document by document, or ids as given.
std::vector<int32_t> token_stream(const Args& a, const megamoe::ModelConfig& config) {
  if (a.text_path.empty()) {
    const std::vector<int32_t> ids = megamoe::read_token_ids_file(a.ids_file);
    for (size_t t = 0; t < ids.size(); ++t)
      MEGAMOE_CHECK(ids[t] < config.vocab_size, a.ids_file, ": token id ", ids[t], " at index ", t,
                    " is outside the model's vocabulary [0, ", config.vocab_size, ")");
    return ids;
  }
  megamoe::text::Tokenizer tokenizer = megamoe::text::Tokenizer::from_file(a.tokenizer_path);
  MEGAMOE_CHECK(static_cast<int64_t>(tokenizer.vocab_size()) <= config.vocab_size, "tokenizer ", a.tokenizer_path,
                " has ", tokenizer.vocab_size(), " tokens, more than the model's vocab_size ", config.vocab_size,
                ": it is not this model's tokenizer");
  const std::string text = megamoe::read_input_file(a.text_path, megamoe::kMaxEvalTextBytes);
  MEGAMOE_CHECK(!text.empty(), a.text_path, ": the file is empty");
  tokenizer.set_max_input_bytes(std::max(tokenizer.max_input_bytes(), text.size()));
  try {
    return megamoe::tokenize_documents(tokenizer, text, static_cast<int32_t>(config.bos_token_id),
                                       static_cast<int32_t>(config.eos_token_id));
  } catch (const megamoe::Error& e) {
    MEGAMOE_THROW(a.text_path, ": ", e.what());
  }
}

std::unique_ptr<megamoe::dsv4::Model> load_model(const std::string& dir, const Args& a, int64_t batch,
                                                 int64_t window, bool w4a4) {
  megamoe::dsv4::ModelOptions options;
  options.device = megamoe::parse_device_kind(a.device);
  options.backend.max_sequences = batch;
  options.backend.max_context = window + 1;             // BOS + the window
  options.backend.max_step_rows = batch * (window + 1);  // a batch is one step
  options.backend.kv_fp8 = a.kv_fp8;
  if (w4a4) options.backend.moe_activations = megamoe::MoeActivationFormat::kW4A4;
  options.backend.progress = true;
  return megamoe::dsv4::Model::load(dir, options);
}

nlohmann::ordered_json scores_json(const megamoe::EvalScores& s) {
  return {{"ppl", s.ppl}, {"mean_nll", s.mean_nll}, {"window_nll_sums", s.window_nll}};
}

int run_eval(int argc, char** argv) {
  CLI::App app{"perplexity of a model on held-out text (and KL / top-1 agreement against a reference model)",
               argv[0]};
  Args a;
  app.add_option("--model", a.model_dir, "checkpoint directory (config.json + safetensors)")->required();
  app.add_option("--tokenizer", a.tokenizer_path, "Hugging Face tokenizer.json (with --text)");
  CLI::Option* text = app.add_option("--text", a.text_path, "UTF-8 text; documents separated by a blank line");
  CLI::Option* ids = app.add_option("--ids-file", a.ids_file, "an already tokenized stream (\"-\" = stdin)");
  app.add_option("--window", a.window, "tokens per window after its BOS (default 256)");
  app.add_option("--max-windows", a.max_windows, "evaluate at most N windows (default 0: all)");
  app.add_option("--batch", a.batch, "windows per forward (default 8)");
  app.add_option("--device", a.device, "cpu, cuda, or auto (cuda where a GPU is present; the default)");
  app.add_option("--reference", a.reference_dir, "a second checkpoint run on the same windows (same vocabulary)");
  app.add_flag("--w4a4", a.w4a4, std::string(megamoe::cli::kW4a4Help) + "; the model only, not the reference");
  app.add_flag("--kv-fp8", a.kv_fp8, "round KV as FP8 storage in both models");
  app.add_option("--json", a.json_path, "write every number here as JSON");
  CLI11_PARSE(app, argc, argv);

  using megamoe::cli::parse_int_option;
  MEGAMOE_CHECK(text->count() + ids->count() == 1, "give the evaluation text as --text or --ids-file (one of them)");
  MEGAMOE_CHECK(a.text_path.empty() || !a.tokenizer_path.empty(), "--text needs --tokenizer");
  MEGAMOE_CHECK(a.tokenizer_path.empty() || !a.text_path.empty(), "--tokenizer is used only with --text");
  const int64_t window = parse_int_option("--window", a.window, 2, int64_t{1} << 24);
  const int64_t max_windows = parse_int_option("--max-windows", a.max_windows, 0, int64_t{1} << 40);
  const int64_t batch = parse_int_option("--batch", a.batch, 1, 4096);

  // Everything that can be checked before a checkpoint loads is.
  const megamoe::ModelConfig config = config_of(a.model_dir);
  auto check_fits = [&](const megamoe::ModelConfig& c, const std::string& dir) {
    MEGAMOE_CHECK(c.max_position_embeddings <= 0 || window + 1 <= c.max_position_embeddings, "--window ", window,
                  " needs ", window + 1, " positions (BOS + the window), more than ", dir,
                  "/config.json: max_position_embeddings = ", c.max_position_embeddings);
  };
  check_fits(config, a.model_dir);
  MEGAMOE_CHECK(config.bos_token_id >= 0 && config.bos_token_id < config.vocab_size && config.eos_token_id >= 0 &&
                    config.eos_token_id < config.vocab_size,
                a.model_dir, "/config.json: the evaluation needs bos_token_id and eos_token_id in the vocabulary ",
                "(bos ", config.bos_token_id, ", eos ", config.eos_token_id, ", vocab_size ", config.vocab_size, ")");
  if (!a.reference_dir.empty()) {
    const megamoe::ModelConfig ref = config_of(a.reference_dir);
    MEGAMOE_CHECK(ref.vocab_size == config.vocab_size, "--reference ", a.reference_dir, " has vocab_size ",
                  ref.vocab_size, ", the model ", config.vocab_size, ": the two must share one vocabulary");
    check_fits(ref, a.reference_dir);
  }
  const std::vector<int32_t> stream = token_stream(a, config);
  const auto windows =
      megamoe::make_eval_windows(stream, static_cast<int32_t>(config.bos_token_id), window, max_windows);
  const std::string source = a.text_path.empty() ? a.ids_file : a.text_path;
  std::fprintf(stderr, "%s: %zu tokens, %zu windows of %lld\n", source.c_str(), stream.size(), windows.size(),
               static_cast<long long>(window));

  const auto model = load_model(a.model_dir, a, batch, window, a.w4a4);
  std::unique_ptr<megamoe::dsv4::Model> reference;
  if (!a.reference_dir.empty()) reference = load_model(a.reference_dir, a, batch, window, /*w4a4=*/false);

  megamoe::EvalOptions options;
  options.batch = batch;
  const auto start = std::chrono::steady_clock::now();
  options.progress = [&](int64_t done, int64_t total) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "\reval: %lld/%lld windows (%.0f s)", static_cast<long long>(done),
                 static_cast<long long>(total), s);
    if (done == total) std::fprintf(stderr, "\n");
  };
  const megamoe::EvalReport r = megamoe::evaluate(*model, windows, options, reference.get());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const std::string device(megamoe::device_kind_name(model->backend().kind()));
  const std::string moe(megamoe::moe_activation_format_name(model->backend().options().moe_activations));
  std::printf("model      %s (%s, MoE %s)\n", a.model_dir.c_str(), model->backend().describe().c_str(), moe.c_str());
  std::printf("text       %s: %zu tokens, %lld windows of %lld, %lld tokens scored\n", source.c_str(), stream.size(),
              static_cast<long long>(r.windows), static_cast<long long>(window),
              static_cast<long long>(r.tokens_scored));
  std::printf("ppl        %.4f (mean nll %.6f)\n", r.model.ppl, r.model.mean_nll);
  if (r.reference) {
    std::printf("reference  %s: ppl %.4f (mean nll %.6f)\n", a.reference_dir.c_str(), r.reference->ppl,
                r.reference->mean_nll);
    std::printf("KL(reference || model) %.6f nats/token, top-1 agreement %.4f\n", r.mean_kl, r.top1_agreement);
  }

  if (!a.json_path.empty()) {
    nlohmann::ordered_json j = {
        {"model", a.model_dir}, {"device", device}, {"backend", model->backend().describe()},
        {"moe_activations", moe}, {"kv_fp8", a.kv_fp8}, {"source", source},
        {"stream_tokens", stream.size()}, {"window", window}, {"windows", r.windows},
        {"tokens_scored", r.tokens_scored}, {"batch", batch}, {"seconds", seconds},
        {"ppl", r.model.ppl}, {"mean_nll", r.model.mean_nll}, {"window_nll_sums", r.model.window_nll}};
    if (r.reference) {
      j["reference"] = a.reference_dir;
      j["reference_scores"] = scores_json(*r.reference);
      j["kl"] = r.mean_kl;
      j["top1_agreement"] = r.top1_agreement;
    }
    std::ofstream out(a.json_path);
    out << j.dump(1) << "\n";
    MEGAMOE_CHECK(out.good(), a.json_path, ": cannot write the JSON report");
  }
  return 0;
}

const megamoe::cli::Registration kEval{"eval", "perplexity on held-out text (KL / top-1 against a reference)",
                                       run_eval};

}  // namespace
