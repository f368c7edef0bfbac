// `megamoe generate`: prefill the prompt ids, then decode one token at a time
// with the per-sequence cache, printing the generated ids (greedy by default,
// or sampled with --temperature/--top-k/--top-p, reproducible by --seed).
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/command.hpp"
#include "model/deepseek_v4/model.hpp"
#include "runtime/session.hpp"
#include "runtime/token_ids.hpp"

namespace {

int run_generate(int argc, char** argv) {
  CLI::App app{"generate token ids from prompt ids", argv[0]};
  std::string model_dir, ids_text;
  megamoe::GenerateOptions options;
  bool ignore_eos = false;
  app.add_option("--model", model_dir, "checkpoint directory (config.json + safetensors)")->required();
  app.add_option("--ids", ids_text, "comma-separated prompt token ids, e.g. 0,5,7")->required();
  app.add_option("--max-new-tokens", options.max_new_tokens, "number of tokens to generate")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--temperature", options.sampling.temperature, "0 = greedy (default)");
  app.add_option("--top-k", options.sampling.top_k, "keep the k most likely tokens (0 = all)");
  app.add_option("--top-p", options.sampling.top_p, "nucleus probability in (0, 1]");
  app.add_option("--seed", options.sampling.seed, "sampling seed");
  app.add_flag("--ignore-eos", ignore_eos, "do not stop at the end-of-sequence token");
  CLI11_PARSE(app, argc, argv);
  options.stop_at_eos = !ignore_eos;

  const std::vector<int32_t> prompt = megamoe::parse_token_ids(ids_text);
  const auto model = megamoe::dsv4::Model::load(model_dir);
  const std::vector<int32_t> out = megamoe::generate(*model, prompt, options);
  for (size_t i = 0; i < out.size(); ++i) std::printf("%s%d", i ? "," : "", out[i]);
  std::printf("\n");
  return 0;
}

const megamoe::cli::Registration kGenerate{"generate", "generate token ids from prompt ids", run_generate};

}  // namespace
