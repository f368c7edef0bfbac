// `megamoe bench serve`: the server under load, end to end over HTTP. Loads
// the model, starts `serve` in-process on a free loopback port, and for each
// concurrency level runs that many streaming clients, each sending
// --requests streamed completions (a --prompt-tokens prompt, --max-tokens
// generated with EOS ignored, greedy). Prints time to first token, time per
// output token after the first, end-to-end latency (median and p90) and
// output tokens per second for the level as a whole.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "cli/command.hpp"
#include "core/error.hpp"
#include "model/deepseek_v4/model.hpp"
#include "server/engine.hpp"
#include "server/http_server.hpp"
#include "text/tokenizer.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::ordered_json;

struct Sample {
  double ttft = 0, tpot = 0, e2e = 0;
  int64_t tokens = 0;
  bool ok = false;
};

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

Sample one_request(int port, const std::string& body) {
  Sample s;
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(600, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.headers = {{"Content-Type", "application/json"}};
  req.body = body;
  const auto start = Clock::now();
  bool first = false;
  Clock::time_point first_at;
  std::string buffer;
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    buffer.append(data, len);
    for (std::size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0 || event == "data: [DONE]") continue;
      const json c = json::parse(event.substr(6), nullptr, false);
      if (c.is_discarded()) continue;
      if (!first && !c["choices"].empty()) {
        first = true;
        first_at = Clock::now();
      }
      if (c.contains("usage") && c["usage"].is_object()) s.tokens = c["usage"]["completion_tokens"];
    }
    return true;
  };
  httplib::Response res;
  httplib::Error error;
  s.ok = client.send(req, res, error) && res.status == 200 && first && s.tokens > 0;
  const auto end = Clock::now();
  if (s.ok) {
    s.ttft = ms(first_at - start);
    s.e2e = ms(end - start);
    s.tpot = s.tokens > 1 ? ms(end - first_at) / static_cast<double>(s.tokens - 1) : 0.0;
  }
  return s;
}

int run_bench_serve(int argc, char** argv) {
  CLI::App app{"serve under load: TTFT, TPOT and throughput at several concurrencies", argv[0]};
  std::string model_dir, tokenizer_path, device = "auto";
  std::vector<int64_t> levels = {1, 8, 32};
  int64_t requests = 4, prompt_tokens = 64, max_tokens = 64, prefill_chunk = 512, max_context = 4096;
  app.add_option("--model", model_dir, "checkpoint directory")->required();
  app.add_option("--tokenizer", tokenizer_path, "tokenizer.json (default: DIR/tokenizer.json)");
  app.add_option("--device", device, "cpu, cuda or auto");
  app.add_option("--concurrency", levels, "concurrent clients per level (default 1 8 32)")->delimiter(',');
  app.add_option("--requests", requests, "requests per client per level (default 4)")->check(CLI::PositiveNumber);
  app.add_option("--prompt-tokens", prompt_tokens, "prompt length in tokens, about (default 64)")->check(CLI::PositiveNumber);
  app.add_option("--max-tokens", max_tokens, "tokens generated per request (default 64)")->check(CLI::PositiveNumber);
  app.add_option("--prefill-chunk", prefill_chunk, "the server's prompt tokens per step (default 512)");
  app.add_option("--max-context", max_context, "tokens per sequence (default 4096)");
  CLI11_PARSE(app, argc, argv);
  if (tokenizer_path.empty()) tokenizer_path = (std::filesystem::path(model_dir) / "tokenizer.json").string();
  const int64_t max_level = *std::max_element(levels.begin(), levels.end());
  MEGAMOE_CHECK(max_level >= 1, "bench serve: --concurrency needs levels >= 1");

  const megamoe::text::Tokenizer tokenizer = megamoe::text::Tokenizer::from_file(tokenizer_path);
  megamoe::dsv4::ModelOptions options;
  options.device = megamoe::parse_device_kind(device);
  options.backend.max_sequences = max_level;
  options.backend.max_context = max_context;
  const auto model = megamoe::dsv4::Model::load(model_dir, options);
  const auto engine = megamoe::server::make_model_engine(*model, max_level, max_context);
  megamoe::server::ServerOptions so;
  so.port = 0;
  so.max_batch = max_level;
  so.max_queue = max_level;
  so.prefill_chunk = prefill_chunk;
  so.log_requests = false;
  megamoe::server::Server server(so, *engine, tokenizer,
                                 {model->config().bos_token_id, model->config().eos_token_id});
  const int port = server.start();

  // A prompt of about prompt_tokens tokens (a word is a token or two).
  std::string prompt;
  while (static_cast<int64_t>(tokenizer.encode(prompt).size()) < prompt_tokens) prompt += " the";
  std::printf("bench serve: %s on %s, prompt %zu tokens, %lld generated per request, %lld requests per client\n",
              model_dir.c_str(), model->backend().describe().c_str(), tokenizer.encode(prompt).size() + 1,
              static_cast<long long>(max_tokens), static_cast<long long>(requests));
  std::printf("| concurrency | requests | TTFT p50 ms | TTFT p90 ms | TPOT p50 ms | TPOT p90 ms | e2e p50 ms | output tok/s |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const int64_t level : levels) {
    std::vector<Sample> samples;
    std::mutex mu;
    const json body = {{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}, {"ignore_eos", true},
                       {"stream", true}, {"stream_options", {{"include_usage", true}}}};
    const std::string text = body.dump();
    const auto start = Clock::now();
    std::vector<std::thread> clients;
    for (int64_t c = 0; c < level; ++c) {
      clients.emplace_back([&] {
        for (int64_t r = 0; r < requests; ++r) {
          const Sample s = one_request(port, text);
          std::lock_guard<std::mutex> lock(mu);
          samples.push_back(s);
        }
      });
    }
    for (auto& t : clients) t.join();
    const double wall = ms(Clock::now() - start) / 1000.0;
    std::vector<double> ttft, tpot, e2e;
    int64_t tokens = 0, failed = 0;
    for (const Sample& s : samples) {
      if (!s.ok) {
        ++failed;
        continue;
      }
      ttft.push_back(s.ttft);
      tpot.push_back(s.tpot);
      e2e.push_back(s.e2e);
      tokens += s.tokens;
    }
    MEGAMOE_CHECK(failed == 0, "bench serve: ", failed, " of ", samples.size(), " requests failed at concurrency ", level);
    std::printf("| %lld | %zu | %.2f | %.2f | %.3f | %.3f | %.1f | %.0f |\n", static_cast<long long>(level),
                samples.size(), quantile(ttft, 0.5), quantile(ttft, 0.9), quantile(tpot, 0.5), quantile(tpot, 0.9),
                quantile(e2e, 0.5), static_cast<double>(tokens) / wall);
  }
  server.shutdown(std::chrono::milliseconds(0));
  return 0;
}

const megamoe::cli::BenchRegistration kBenchServe{"serve", "the server under load: TTFT, TPOT, throughput",
                                             run_bench_serve};

}  // namespace
