// `megamoe logits`: the model's logits for a list of token ids, as a float32
// [T, V] .npy file, computed by full prefill, chunked prefill or one-token
// decode steps (all three must agree). Optionally dumps every named
// intermediate activation as DIR/<name>.npy for layer-by-layer comparisons.
#include <cstdio>
#include <filesystem>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/command.hpp"
#include "cli/options.hpp"
#include "core/error.hpp"
#include "core/model_config.hpp"
#include "core/npy.hpp"
#include "model/deepseek_v4/model.hpp"
#include "runtime/session.hpp"
#include "runtime/token_ids.hpp"

namespace {

int run_logits(int argc, char** argv) {
  CLI::App app{"compute logits [T, V] for token ids and write them as a float32 .npy file", argv[0]};
  std::string model_dir, ids_text, ids_file, out_path, mode_text = "prefill", dump_dir, device = "auto";
  app.add_option("--model", model_dir, "checkpoint directory (config.json + safetensors)")->required();
  CLI::Option* ids_opt = app.add_option("--ids", ids_text, "comma-separated token ids, e.g. 3,17,42");
  CLI::Option* ids_file_opt =
      app.add_option("--ids-file", ids_file, "token ids from a file (\"-\" = stdin), separated by commas or whitespace");
  app.add_option("--out", out_path, "output .npy file")->required();
  app.add_option("--mode", mode_text, "prefill | decode | chunked:N");
  app.add_option("--device", device, "cpu, cuda, or auto (cuda where a GPU is present; the default)");
  bool kv_fp8 = false;
  app.add_flag("--kv-fp8", kv_fp8, "round KV as FP8 storage (the official reference's QAT numerics)");
  bool w4a4 = false;
  app.add_flag("--w4a4", w4a4, megamoe::cli::kW4a4Help);
  app.add_option("--dump-dir", dump_dir, "write every named activation as DIR/<name>.npy");
  CLI11_PARSE(app, argc, argv);

  MEGAMOE_CHECK(ids_opt->count() + ids_file_opt->count() == 1, "give the token ids as --ids or --ids-file (one of them)");
  const std::vector<int32_t> ids =
      ids_file.empty() ? megamoe::parse_token_ids(ids_text) : megamoe::read_token_ids_file(ids_file);
  const megamoe::LogitsMode mode = megamoe::LogitsMode::parse(mode_text);
  // The context and the vocabulary are checked before the checkpoint loads.
  const std::string config_path = (std::filesystem::path(model_dir) / "config.json").string();
  const megamoe::ModelConfig config = megamoe::load_model_config(config_path);
  MEGAMOE_CHECK(static_cast<int64_t>(ids.size()) <= config.max_position_embeddings, "the ", ids.size(),
                " token ids exceed ", config_path, ": max_position_embeddings = ", config.max_position_embeddings);
  for (size_t t = 0; t < ids.size(); ++t) {
    MEGAMOE_CHECK(ids[t] < config.vocab_size, "token id ", ids[t], " at index ", t, " is outside the vocabulary [0, ",
                  config.vocab_size, ") of ", config_path);
  }
  megamoe::dsv4::ModelOptions options;
  options.device = megamoe::parse_device_kind(device);
  options.backend.max_sequences = 1;
  options.backend.progress = true;
  options.backend.kv_fp8 = kv_fp8;
  if (w4a4) options.backend.moe_activations = megamoe::MoeActivationFormat::kW4A4;
  const auto model = megamoe::dsv4::Model::load(model_dir, options);

  megamoe::dsv4::DumpFn dump;
  int64_t call = 0;
  if (!dump_dir.empty()) {
    std::filesystem::create_directories(dump_dir);
    dump = [&](const std::string& name, const megamoe::Shape& shape, std::span<const float> values) {
      // Modes with several forward calls prefix the call's first position.
      const std::string file = mode.kind == megamoe::LogitsMode::kPrefill ? name : "call" + std::to_string(call) + "." + name;
      megamoe::write_npy_f32(std::filesystem::path(dump_dir) / (file + ".npy"), shape, values.data());
      if (name == "final_norm") ++call;
    };
  }
  const std::vector<float> logits = megamoe::compute_logits(*model, ids, mode, dump ? &dump : nullptr);
  const int64_t tokens = static_cast<int64_t>(ids.size());
  megamoe::write_npy_f32(out_path, {tokens, model->config().vocab_size}, logits.data());
  std::printf("wrote %s: float32 [%lld, %lld] (%s)\n", out_path.c_str(), static_cast<long long>(tokens),
              static_cast<long long>(model->config().vocab_size), mode_text.c_str());
  return 0;
}

const megamoe::cli::Registration kLogits{"logits", "write the logits of token ids as a .npy file", run_logits};

}  // namespace
