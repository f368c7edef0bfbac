// `megamoe serve`: the OpenAI-compatible (and Anthropic Messages) HTTP server
// on cpp-httplib. Thin: parse and check the request (request.hpp), submit it
// to the scheduler that owns the engine (scheduler.hpp), and format the
// tokens it streams back (reply.hpp).
//
// Endpoints: POST /v1/chat/completions, POST /v1/completions, POST
// /v1/messages, GET /v1/models, GET /health, GET /metrics. docs/server.md.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/engine.hpp"
#include "server/metrics.hpp"
#include "server/scheduler.hpp"
#include "text/tokenizer.hpp"

namespace httplib {
class Server;
struct Request;
struct Response;
}

namespace megamoe::server {

class Generation;

struct ServerOptions {
  std::string host = "127.0.0.1";  // loopback unless told otherwise
  int port = 8000;                 // 0: any free port (tests)
  std::string api_key;             // "": no authentication
  std::string model_name = "megamoe";
  int64_t max_batch = 4;           // sequences running at once (state slots)
  int64_t max_queue = 64;          // requests waiting for a slot; past that 503
  int64_t prefill_chunk = 512;     // prompt tokens per step
  int64_t max_body_bytes = int64_t{8} << 20;
  int64_t http_threads = 0;        // 0: max_batch + max_queue + 8 (each open request holds one)
  bool log_requests = true;        // one line per request on stderr
  std::string describe() const;    // for the start-up banner
};

// Token facts of the served model.
struct ModelTokens {
  int64_t bos_id = -1;
  int64_t eos_id = -1;
};

class Server {
 public:
  // The engine and tokenizer must outlive the server.
  Server(ServerOptions options, StepEngine& engine, const text::Tokenizer& tokenizer, ModelTokens tokens);
  ~Server();

  // Binds, starts the scheduler and the listener; returns the bound port.
  // Throws naming the address when it cannot bind.
  int start();
  // Stops accepting generation requests (503), lets running ones finish for
  // up to `grace`, ends the rest, then stops the listener. Idempotent.
  void shutdown(std::chrono::milliseconds grace = std::chrono::seconds(30));

  int port() const { return port_; }
  const Metrics& metrics() const { return metrics_; }

 private:
  void routes();
  void handle_generation(const httplib::Request& req, httplib::Response& res, int api);
  void reply_error(httplib::Response& res, int api, int status, const std::string& type, const std::string& message,
                   const std::string& param, const std::string& code);
  bool authorized(const httplib::Request& req) const;
  // choices: the request's (none when it was refused).
  void log_request(const std::string& id, const std::string& path, int status,
                   const std::vector<std::shared_ptr<Generation>>& choices, Clock::time_point start,
                   const std::string& finish);
  ServerOptions options_;
  StepEngine& engine_;
  const text::Tokenizer& tokenizer_;
  ModelTokens tokens_;
  Metrics metrics_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<httplib::Server> http_;
  std::thread listener_;
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> open_replies_{0};  // generation replies not yet fully written
  std::mutex shutdown_mu_;
  bool stopped_ = false;
  int port_ = -1;
  int64_t created_ = 0;
};

}  // namespace megamoe::server
