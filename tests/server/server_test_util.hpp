// Shared pieces of the server tests: the tiny-text model and tokenizer, a
// server on an ephemeral loopback port, an HTTP client and SSE parsing.
#pragma once

#include <algorithm>
#include <chrono>
#include <span>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "model/deepseek_v4/model.hpp"
#include "server/engine.hpp"
#include "server/http_server.hpp"
#include "text/tokenizer.hpp"

namespace megamoe::server::testing {

using json = nlohmann::ordered_json;

inline const std::string kData = MEGAMOE_TEST_DATA_DIR;
constexpr int64_t kSlots = 16;
constexpr int64_t kContext = 4096;

const text::Tokenizer& tiny_tokenizer();
const dsv4::Model& tiny_model();  // tests/data/tiny-text, kSlots slots, kContext tokens
StepEngine& tiny_engine();

// A server over an engine (the tiny model by default) on 127.0.0.1:<free port>.
class TestServer {
 public:
  explicit TestServer(ServerOptions options = {}, StepEngine* engine = nullptr);
  ~TestServer();
  int port() const { return port_; }
  Server& server() { return *server_; }
  httplib::Client client(int read_timeout_s = 60) const;

 private:
  std::unique_ptr<Server> server_;
  int port_ = -1;
};

struct Reply {
  int status = -1;
  std::string body;
  json json_body;  // parsed when the body is JSON
  httplib::Headers headers;
};

Reply post(const TestServer& s, const std::string& path, const std::string& body, const httplib::Headers& headers = {});
Reply get(const TestServer& s, const std::string& path, const httplib::Headers& headers = {});

// A streamed POST: the `data:` payloads in order (the event names in `events`
// for Anthropic). stop_after > 0 closes the connection after that many events.
struct Stream {
  int status = -1;
  std::vector<std::string> data;
  std::vector<std::string> events;
  std::string raw;
  std::string error;  // the client's error, if the exchange failed
};
Stream post_stream(const TestServer& s, const std::string& path, const std::string& body, int stop_after = 0,
                   const httplib::Headers& headers = {});

// Emits `script` (then its last id forever) after the prompt, whatever the prompt.
class ScriptEngine : public StepEngine {
 public:
  explicit ScriptEngine(std::vector<int32_t> script, std::chrono::milliseconds step_time = {})
      : script_(std::move(script)), step_time_(step_time) {}
  int64_t vocab_size() const override { return static_cast<int64_t>(tiny_tokenizer().vocab_size()); }
  int64_t max_context() const override { return kContext; }
  int64_t slots() const override { return kSlots; }
  std::unique_ptr<EngineSequence> new_sequence() override { return std::make_unique<Seq>(); }
  std::vector<std::vector<float>> step(std::span<const StepInput> inputs) override {
    if (step_time_.count() > 0) std::this_thread::sleep_for(step_time_);
    std::vector<std::vector<float>> out;
    for (const StepInput& in : inputs) {
      auto* seq = static_cast<Seq*>(in.sequence);
      const std::size_t k = std::min(seq->steps++, script_.size() - 1);
      std::vector<float> row(static_cast<std::size_t>(vocab_size()), 0.0f);
      row[static_cast<std::size_t>(script_[k])] = 30.0f;
      out.push_back(std::move(row));
    }
    return out;
  }

 private:
  struct Seq : EngineSequence {
    std::size_t steps = 0;
  };
  std::vector<int32_t> script_;
  std::chrono::milliseconds step_time_;
};

// A metric's value in /metrics text (first sample of that name, labels included in `name`).
double metric(const TestServer& s, const std::string& name);

// Waits until cond() or the timeout; returns cond().
template <typename F>
bool eventually(F cond, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return cond();
}

}  // namespace megamoe::server::testing
