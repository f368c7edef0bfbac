#include "server_test_util.hpp"

#include <sstream>

namespace megamoe::server::testing {

const text::Tokenizer& tiny_tokenizer() {
  static const text::Tokenizer t = text::Tokenizer::from_file(kData + "/tiny-tokenizer/tokenizer.json");
  return t;
}

const dsv4::Model& tiny_model() {
  static const std::unique_ptr<dsv4::Model> m = [] {
    dsv4::ModelOptions options;
    options.device = DeviceKind::kCpu;
    options.backend.max_sequences = kSlots;
    options.backend.max_context = kContext;
    return dsv4::Model::load(kData + "/tiny-text", options);
  }();
  return *m;
}

StepEngine& tiny_engine() {
  static const std::unique_ptr<StepEngine> e = make_model_engine(tiny_model(), kSlots, kContext);
  return *e;
}

TestServer::TestServer(ServerOptions options, StepEngine* engine) {
  options.host = "127.0.0.1";
  options.port = 0;
  options.log_requests = false;
  StepEngine& e = engine ? *engine : tiny_engine();
  ModelTokens tokens{tiny_model().config().bos_token_id, tiny_model().config().eos_token_id};
  server_ = std::make_unique<Server>(options, e, tiny_tokenizer(), tokens);
  port_ = server_->start();
}

TestServer::~TestServer() { server_->shutdown(std::chrono::milliseconds(0)); }

httplib::Client TestServer::client(int read_timeout_s) const {
  httplib::Client c("127.0.0.1", port_);
  c.set_read_timeout(read_timeout_s, 0);
  c.set_connection_timeout(5, 0);
  return c;
}

namespace {
Reply to_reply(const httplib::Result& r) {
  Reply out;
  if (!r) return out;
  out.status = r->status;
  out.body = r->body;
  out.headers = r->headers;
  try {
    out.json_body = json::parse(r->body);
  } catch (const json::exception&) {
  }
  return out;
}
}  // namespace

Reply post(const TestServer& s, const std::string& path, const std::string& body, const httplib::Headers& headers) {
  httplib::Client c = s.client();
  return to_reply(c.Post(path.c_str(), headers, body, "application/json"));
}

Reply get(const TestServer& s, const std::string& path, const httplib::Headers& headers) {
  httplib::Client c = s.client();
  return to_reply(c.Get(path.c_str(), headers));
}

Stream post_stream(const TestServer& s, const std::string& path, const std::string& body, int stop_after,
                   const httplib::Headers& headers) {
  Stream out;
  httplib::Client c = s.client();
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.headers = headers;
  req.headers.emplace("Content-Type", "application/json");
  req.body = body;
  std::string buffer, event;
  int count = 0;
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    out.raw.append(data, len);
    buffer.append(data, len);
    for (std::size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      const std::string block = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      std::istringstream lines(block);
      for (std::string line; std::getline(lines, line);) {
        if (line.rfind("event: ", 0) == 0) out.events.push_back(line.substr(7));
        if (line.rfind("data: ", 0) == 0) {
          out.data.push_back(line.substr(6));
          ++count;
        }
      }
      if (stop_after > 0 && count >= stop_after) return false;
    }
    return true;
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  if (!c.send(req, res, error)) out.error = httplib::to_string(error);
  out.status = res.status;
  if (out.data.empty() && out.raw.empty()) out.raw = res.body;
  return out;
}

double metric(const TestServer& s, const std::string& name) {
  const Reply r = get(s, "/metrics");
  std::istringstream lines(r.body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1.0;
}

}  // namespace megamoe::server::testing
