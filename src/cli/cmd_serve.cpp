// `megamoe serve`: the OpenAI-compatible HTTP server (src/server, docs/server.md).
//   megamoe serve --model DIR [--tokenizer F] [--host 127.0.0.1] [--port 8000] [--device cpu|cuda|auto]
//                 [--devices N|LIST] [--ranks N]
//                 [--api-key K] [--max-batch N] [--max-context N] [--max-queue N] [--prefill-chunk N]
// SIGINT / SIGTERM: stop accepting, let running requests finish (--shutdown-timeout), exit 0.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/command.hpp"
#include "cli/rank_options.hpp"
#include "core/error.hpp"
#include "core/model_config.hpp"
#include "model/deepseek_v4/model.hpp"
#include "server/engine.hpp"
#include "server/http_server.hpp"
#include "text/tokenizer.hpp"

namespace {

struct Args {
  std::string model_dir, tokenizer_path, device = "auto", served_name;
  int64_t max_context = 0;
  double shutdown_timeout = 30.0;
  bool kv_fp8 = false, quiet = false;
  megamoe::server::ServerOptions server;
  megamoe::cli::RankArgs ranks;
};

int run_serve(int argc, char** argv) {
  CLI::App app{"serve the model over an OpenAI-compatible HTTP API", argv[0]};
  Args a;
  app.add_option("--model", a.model_dir, "checkpoint directory (config.json + safetensors)")->required();
  app.add_option("--tokenizer", a.tokenizer_path, "Hugging Face tokenizer.json (default: DIR/tokenizer.json)");
  app.add_option("--host", a.server.host, "address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)");
  app.add_option("--port", a.server.port, "port (default 8000; 0 = any free port)")->check(CLI::Range(0, 65535));
  app.add_option("--device", a.device, "cpu, cuda, or auto (cuda where a GPU is present; the default)");
  megamoe::cli::add_rank_options(app, a.ranks);
  app.add_option("--api-key", a.server.api_key, "require this key (Authorization: Bearer K, or x-api-key: K)");
  app.add_option("--max-batch", a.server.max_batch, "sequences running at once = state slots (default 4)")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  app.add_option("--max-context", a.max_context,
                 "tokens per sequence, prompt + completion (default: max_position_embeddings capped at 65536)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-queue", a.server.max_queue, "requests waiting for a slot before 503 (default 64)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--prefill-chunk", a.server.prefill_chunk, "prompt tokens per engine step (default 512)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--max-body-bytes", a.server.max_body_bytes, "largest request body (default 8 MiB)")
      ->check(CLI::Range(int64_t{1024}, int64_t{1} << 32));
  app.add_option("--served-model-name", a.served_name, "model id in replies and /v1/models (default: DIR's name)");
  app.add_option("--shutdown-timeout", a.shutdown_timeout, "seconds running requests get to finish on SIGINT/SIGTERM")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--kv-fp8", a.kv_fp8, "round KV as FP8 storage (the official reference's QAT numerics)");
  app.add_flag("--quiet", a.quiet, "no per-request log lines");
  CLI11_PARSE(app, argc, argv);

  // Signals are taken by sigwait below; every thread started from here on
  // inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  namespace fs = std::filesystem;
  if (a.tokenizer_path.empty()) a.tokenizer_path = (fs::path(a.model_dir) / "tokenizer.json").string();
  MEGAMOE_CHECK(fs::exists(a.tokenizer_path), "serve: tokenizer ", a.tokenizer_path,
                " does not exist (pass --tokenizer FILE)");
  const megamoe::text::Tokenizer tokenizer = megamoe::text::Tokenizer::from_file(a.tokenizer_path);

  megamoe::dsv4::ModelOptions options;
  options.device = megamoe::parse_device_kind(a.device);
  options.backend.max_sequences = a.server.max_batch;
  options.backend.kv_fp8 = a.kv_fp8;
  options.backend.progress = true;
  megamoe::cli::apply_rank_args(a.ranks, a.device, options);
  {
    // The context limit is resolved here so the server can check requests against it.
    const megamoe::ModelConfig config = megamoe::load_model_config(fs::path(a.model_dir) / "config.json");
    int64_t limit = std::min<int64_t>(config.max_position_embeddings > 0 ? config.max_position_embeddings : 65536, 65536);
    if (a.max_context > 0) {
      MEGAMOE_CHECK(config.max_position_embeddings <= 0 || a.max_context <= config.max_position_embeddings,
                    "serve: --max-context ", a.max_context, " exceeds the model's max_position_embeddings ",
                    config.max_position_embeddings);
      limit = a.max_context;
    }
    a.max_context = limit;
  }
  options.backend.max_context = a.max_context;
  const auto model = megamoe::dsv4::Model::load(a.model_dir, options);
  const megamoe::ModelConfig& config = model->config();
  MEGAMOE_CHECK(static_cast<int64_t>(tokenizer.vocab_size()) <= config.vocab_size, "serve: tokenizer ",
                a.tokenizer_path, " has ", tokenizer.vocab_size(), " tokens, more than the model's vocab_size ",
                config.vocab_size, ": it does not fit the model");
  const auto engine = megamoe::server::make_model_engine(*model, a.server.max_batch, a.max_context);

  a.server.model_name = a.served_name.empty() ? fs::path(a.model_dir).lexically_normal().filename().string() : a.served_name;
  if (a.server.model_name.empty()) a.server.model_name = fs::absolute(a.model_dir).parent_path().filename().string();
  a.server.log_requests = !a.quiet;
  megamoe::server::ModelTokens tokens{config.bos_token_id, config.eos_token_id};
  megamoe::server::Server server(a.server, *engine, tokenizer, tokens);
  const int port = server.start();
  std::fprintf(stderr, "megamoe serve: %s on %s, max-context %lld\n", a.server.describe().c_str(),
               model->backend().describe().c_str(), static_cast<long long>(a.max_context));
  std::fprintf(stderr, "megamoe serve: listening on http://%s:%d\n", a.server.host.c_str(), port);

  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "megamoe serve: %s: finishing running requests, then exiting\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM");
  server.shutdown(std::chrono::milliseconds(static_cast<int64_t>(a.shutdown_timeout * 1000)));
  std::fprintf(stderr, "megamoe serve: stopped\n");
  return 0;
}

const megamoe::cli::Registration kServe{"serve", "OpenAI-compatible HTTP server with continuous batching", run_serve};

}  // namespace
