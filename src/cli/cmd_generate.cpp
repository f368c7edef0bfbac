// `megamoe generate`: prefill the prompt, then decode one token at a time with
// the per-sequence cache (greedy by default, or sampled with --temperature/
// --top-k/--top-p, reproducible by --seed).
//   --ids 0,5,7 | --ids-file F        prompt ids in (F: "-" = stdin), generated ids out (one line)
//   --tokenizer F --prompt TEXT       raw text in (BOS + text), text streamed out
//   --tokenizer F --chat [--prompt T | --chat-file F] [--thinking]
//                                     DeepSeek-V4 chat prompt; the answer streams to
//                                     stdout, reasoning to stderr, tool calls to stdout
//                                     as JSON lines
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/command.hpp"
#include "cli/options.hpp"
#include "cli/rank_options.hpp"
#include "core/error.hpp"
#include "core/model_config.hpp"
#include "model/deepseek_v4/model.hpp"
#include "runtime/session.hpp"
#include "runtime/text_generation.hpp"
#include "runtime/token_ids.hpp"
#include "text/tokenizer.hpp"

namespace {

struct Args {
  std::string model_dir, ids_text, ids_file, tokenizer_path, chat_file, prompt, device = "auto";
  bool kv_fp8 = false, w4a4 = false, special_in_content = false, eager = false;
  int64_t prefill_chunk = 0;
  bool have_ids = false, have_prompt = false, chat = false, thinking = false, no_bos = false, ignore_eos = false, show_ids = false;
  std::vector<std::string> stops;
  // Numeric values as typed, parsed strictly (cli/options.hpp) after CLI11.
  std::string max_new_tokens, temperature, top_k, top_p, seed;
  megamoe::GenerateOptions options;
  megamoe::cli::RankArgs ranks;
};

// Parses the numeric options; their ranges: temperature in [0, 1e6] (0 = greedy),
// top_p in (0, 1], top_k in [0, 2^31), seed any 64-bit unsigned, max-new-tokens in
// [0, 2^24] (and, checked later, within the model's context).
void parse_numbers(Args& a) {
  using namespace megamoe::cli;
  megamoe::SamplingParams& s = a.options.sampling;
  if (!a.max_new_tokens.empty())
    a.options.max_new_tokens = parse_int_option("--max-new-tokens", a.max_new_tokens, 0, int64_t{1} << 24);
  if (!a.temperature.empty()) s.temperature = parse_double_option("--temperature", a.temperature, 0.0, 1e6);
  if (!a.top_p.empty()) s.top_p = parse_double_option("--top-p", a.top_p, 0.0, 1.0, /*lo_open=*/true);
  if (!a.top_k.empty()) s.top_k = parse_int_option("--top-k", a.top_k, 0, INT32_MAX);
  if (!a.seed.empty()) s.seed = parse_uint64_option("--seed", a.seed);
}

void write_out(FILE* f, std::string_view s) {
  std::fwrite(s.data(), 1, s.size(), f);
  std::fflush(f);
}

// Which of the input forms was asked for, rejecting contradictory combinations.
void check_combinations(Args& a) {
  const bool text_mode = a.have_prompt || a.chat || !a.chat_file.empty();
  if (text_mode && a.tokenizer_path.empty() && std::filesystem::is_regular_file(std::filesystem::path(a.model_dir) / "tokenizer.json"))
    a.tokenizer_path = (std::filesystem::path(a.model_dir) / "tokenizer.json").string();
  MEGAMOE_CHECK(a.have_ids || text_mode, "give the prompt as --ids, --prompt or --chat (or --ids-file)");
  MEGAMOE_CHECK(!a.have_ids || !text_mode, "--ids cannot be combined with --prompt/--chat/--chat-file (nor can --ids-file)");
  MEGAMOE_CHECK(!a.special_in_content || a.chat, "--special-tokens-in-content needs --chat");
  MEGAMOE_CHECK(!text_mode || !a.tokenizer_path.empty(),
                "--prompt/--chat need --tokenizer FILE (a tokenizer.json; the default, DIR/tokenizer.json, is missing)");
  MEGAMOE_CHECK(a.chat_file.empty() || a.chat, "--chat-file needs --chat");
  MEGAMOE_CHECK(!(a.chat && a.have_prompt && !a.chat_file.empty()), "--chat takes --prompt or --chat-file, not both");
  MEGAMOE_CHECK(!a.chat || a.have_prompt || !a.chat_file.empty(), "--chat needs --prompt TEXT or --chat-file FILE");
  MEGAMOE_CHECK(!a.thinking || a.chat, "--thinking needs --chat");
  MEGAMOE_CHECK(!a.no_bos || text_mode, "--no-bos is for text prompts (--ids are used as given)");
  MEGAMOE_CHECK(a.stops.empty() || text_mode, "--stop needs a text prompt (--prompt or --chat)");
  MEGAMOE_CHECK(!a.show_ids || text_mode, "--show-ids is for text prompts (--ids already prints ids)");
}

// The prompt and every token asked for must fit the model's context, checked
// before any work: max_position_embeddings and the backend's max_context.
void check_fits_context(const Args& a, size_t prompt_tokens, int64_t max_position, int64_t backend_max,
                        const std::string& config_path) {
  const auto prompt = static_cast<int64_t>(prompt_tokens);
  auto check = [&](int64_t limit, const std::string& what) {
    if (limit <= 0) return;
    MEGAMOE_CHECK(prompt <= limit, "the prompt has ", prompt, " tokens, more than ", what, " = ", limit);
    MEGAMOE_CHECK(a.options.max_new_tokens <= limit - prompt, "--max-new-tokens ", a.options.max_new_tokens,
                  " does not fit: the prompt has ", prompt, " tokens and ", what, " = ", limit, " allows ",
                  limit - prompt, " more");
  };
  check(max_position, config_path + ": max_position_embeddings");
  check(backend_max, "the backend's max_context");
}

// One sequence: the GPU's state pools are sized for it.
std::unique_ptr<megamoe::dsv4::Model> load_model(const Args& a) {
  megamoe::dsv4::ModelOptions options;
  options.device = megamoe::parse_device_kind(a.device);
  options.backend.max_sequences = 1;
  options.backend.progress = true;
  options.backend.kv_fp8 = a.kv_fp8;
  if (a.w4a4) options.backend.moe_activations = megamoe::MoeActivationFormat::kW4A4;
  options.backend.max_step_rows = a.prefill_chunk;
  megamoe::cli::apply_rank_args(a.ranks, a.device, options);
  return megamoe::dsv4::Model::load(a.model_dir, options);
}

int generate_ids(const Args& a) {
  const std::vector<int32_t> prompt =
      a.ids_file.empty() ? megamoe::parse_token_ids(a.ids_text) : megamoe::read_token_ids_file(a.ids_file);
  const std::string config_path = (std::filesystem::path(a.model_dir) / "config.json").string();
  const megamoe::ModelConfig config = megamoe::load_model_config(config_path);
  check_fits_context(a, prompt.size(), config.max_position_embeddings, 0, config_path);
  for (size_t t = 0; t < prompt.size(); ++t) {
    MEGAMOE_CHECK(prompt[t] < config.vocab_size, "token id ", prompt[t], " at index ", t,
                  " is outside the vocabulary [0, ", config.vocab_size, ") of ", config_path);
  }
  const auto model = load_model(a);
  check_fits_context(a, prompt.size(), 0, model->backend().options().max_context, config_path);
  const std::vector<int32_t> out = megamoe::generate(*model, prompt, a.options);
  for (size_t i = 0; i < out.size(); ++i) std::printf("%s%d", i ? "," : "", out[i]);
  std::printf("\n");
  return 0;
}

int generate_text(const Args& a) {
  using megamoe::text::Tokenizer;
  const Tokenizer tokenizer = Tokenizer::from_file(a.tokenizer_path);
  const megamoe::ModelConfig config =
      megamoe::load_model_config(std::filesystem::path(a.model_dir) / "config.json");
  std::vector<int32_t> prompt;
  if (a.chat) {
    megamoe::text::ChatOptions chat_options;
    chat_options.thinking = a.thinking;
    chat_options.add_bos = !a.no_bos;
    chat_options.special_tokens_in_content = a.special_in_content;
    const nlohmann::ordered_json messages =
        a.chat_file.empty() ? megamoe::single_user_message(a.prompt) : megamoe::read_chat_messages(a.chat_file);
    prompt = megamoe::encode_chat_prompt(tokenizer, messages, chat_options);
  } else {
    MEGAMOE_CHECK(a.no_bos || config.bos_token_id >= 0, a.model_dir,
                  "/config.json: bos_token_id is null; pass --no-bos to encode the prompt without one");
    prompt = megamoe::encode_text_prompt(tokenizer, a.prompt, a.no_bos ? -1 : config.bos_token_id, "--prompt");
  }
  megamoe::check_prompt_fits_model(prompt, tokenizer, config.vocab_size, a.tokenizer_path);
  const std::string config_path = (std::filesystem::path(a.model_dir) / "config.json").string();
  check_fits_context(a, prompt.size(), config.max_position_embeddings, 0, config_path);

  megamoe::TextStreamOptions stream;
  stream.chat = a.chat;
  stream.thinking = a.thinking;
  stream.stop_strings = a.stops;
  if (!a.ignore_eos && config.eos_token_id >= 0) stream.eos_ids = {static_cast<int32_t>(config.eos_token_id)};
  megamoe::TextSinks sinks;
  sinks.answer = [](std::string_view t) { write_out(stdout, t); };
  sinks.reasoning = [](std::string_view t) { write_out(stderr, t); };
  sinks.tool_call = [](const megamoe::text::OutputEvent& e) {
    if (e.kind != megamoe::text::OutputEvent::Kind::kToolCallEnd) return;  // printed whole
    const megamoe::text::ToolCall& call = e.tool_call;
    const nlohmann::ordered_json j = {{"tool_call", {{"name", call.name}, {"arguments", call.arguments}}}};
    write_out(stdout, "\n" + j.dump() + "\n");
  };

  const auto model = load_model(a);
  check_fits_context(a, prompt.size(), 0, model->backend().options().max_context, config_path);
  megamoe::TextStreamer streamer(tokenizer, stream, sinks);
  const std::vector<int32_t> ids =
      megamoe::generate(*model, prompt, a.options, [&](int32_t id) { return streamer.push(id); });
  streamer.finish();
  write_out(stdout, "\n");
  if (streamer.truncated()) write_out(stderr, "[an unfinished tool call at the end was dropped]\n");
  if (!streamer.parse_error().empty()) write_out(stderr, "[malformed tool call: " + streamer.parse_error() + "]\n");
  if (a.show_ids) {
    std::string line = "ids:";
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? "," : " ") + std::to_string(ids[i]);
    write_out(stderr, line + "\n");
  }
  return 0;
}

int run_generate(int argc, char** argv) {
  CLI::App app{"generate from prompt ids or text", argv[0]};
  Args a;
  app.add_option("--model", a.model_dir, "checkpoint directory (config.json + safetensors)")->required();
  app.add_option("--device", a.device, "cpu, cuda, or auto (cuda where a GPU is present; the default)");
  megamoe::cli::add_rank_options(app, a.ranks);
  app.add_flag("--kv-fp8", a.kv_fp8, "round KV as FP8 storage (the official reference's QAT numerics)");
  app.add_flag("--w4a4", a.w4a4, megamoe::cli::kW4a4Help);
  app.add_flag("--eager", a.eager, "cuda: launch every decode step's kernels instead of replaying its CUDA graph");
  app.add_option("--prefill-chunk", a.prefill_chunk, "prompt tokens per prefill step (0: the backend's default)")
      ->check(CLI::NonNegativeNumber);
  CLI::Option* ids = app.add_option("--ids", a.ids_text, "comma-separated prompt token ids, e.g. 0,5,7 (prints generated ids)");
  CLI::Option* ids_file = app.add_option("--ids-file", a.ids_file,
                                         "prompt token ids from a file (\"-\" = stdin), separated by commas or whitespace");
  app.add_option("--tokenizer", a.tokenizer_path, "Hugging Face tokenizer.json for --prompt / --chat (default: DIR/tokenizer.json)");
  CLI::Option* prompt = app.add_option("--prompt", a.prompt,
                                       "raw prompt text (BOS + text, no special tokens added); with --chat: "
                                       "the user message");
  app.add_flag("--chat", a.chat, "DeepSeek-V4 chat prompt; reasoning goes to stderr, the answer to stdout");
  app.add_option("--chat-file", a.chat_file, "with --chat: a JSON array of OpenAI-style messages");
  app.add_flag("--thinking", a.thinking, "with --chat: thinking mode");
  app.add_flag("--special-tokens-in-content", a.special_in_content,
               "with --chat: let special-token text inside message content become control tokens (by default it "
               "is encoded as plain text, so content cannot forge role markers)");
  app.add_flag("--no-bos", a.no_bos, "do not start the prompt with BOS");
  app.add_option("--stop", a.stops, "stop when the generated text contains this (repeatable; not printed)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_flag("--show-ids", a.show_ids, "with a text prompt: also print the generated ids to stderr");
  app.add_option("--max-new-tokens", a.max_new_tokens, "number of tokens to generate (default 16)");
  app.add_option("--temperature", a.temperature, "0 = greedy (default); must be >= 0");
  app.add_option("--top-k", a.top_k, "keep the k most likely tokens (0 = all)");
  app.add_option("--top-p", a.top_p, "nucleus probability in (0, 1]");
  app.add_option("--seed", a.seed, "sampling seed, an integer in [0, 2^64)");
  app.add_flag("--ignore-eos", a.ignore_eos, "do not stop at the end-of-sequence token");
  CLI11_PARSE(app, argc, argv);
  MEGAMOE_CHECK(ids->count() == 0 || ids_file->count() == 0, "--ids and --ids-file cannot be combined");
  a.have_ids = ids->count() > 0 || ids_file->count() > 0;
  a.have_prompt = prompt->count() > 0;
  a.options.stop_at_eos = !a.ignore_eos;
  a.options.decode_graph = !a.eager;
  parse_numbers(a);
  check_combinations(a);
  return a.have_ids ? generate_ids(a) : generate_text(a);
}

const megamoe::cli::Registration kGenerate{"generate", "generate ids or text from a prompt", run_generate};

}  // namespace
