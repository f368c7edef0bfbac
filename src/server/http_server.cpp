#include "server/http_server.hpp"

#include <dirent.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <random>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "server/api_error.hpp"
#include "server/generation.hpp"
#include "server/reply.hpp"
#include "server/request.hpp"

namespace megamoe::server {
namespace {

using json = nlohmann::ordered_json;
constexpr auto kPoll = std::chrono::milliseconds(20);

std::string random_id(const std::string& prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* digits = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string s = prefix;
  for (int i = 0; i < 24; ++i) s += digits[rng() % 36];
  return s;
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string address_string(const sockaddr_storage& a, int* port) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (a.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
    *port = ntohs(in->sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto* in = reinterpret_cast<const sockaddr_in6*>(&a);
    inet_ntop(AF_INET6, &in->sin6_addr, buf, sizeof(buf));
    *port = ntohs(in->sin6_port);
  } else {
    *port = -1;
  }
  return buf;
}

// The connected socket of a request, found by its two endpoints, so a
// handler can notice a client that went away while it waits (cpp-httplib
// 0.11 tells a handler nothing about its connection). -1 if not found; then
// a disconnect is noticed when a write fails.
int connection_fd(const httplib::Request& req) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    struct stat st;
    if (fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage local{}, peer{};
    socklen_t ll = sizeof(local), pl = sizeof(peer);
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &ll) != 0) continue;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    int lport = -1, pport = -1;
    address_string(local, &lport);
    const std::string paddr = address_string(peer, &pport);
    if (lport == req.local_port && pport == req.remote_port && paddr == req.remote_addr) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(dir);
  return found;
}

// The client closed its end (or the connection broke).
bool peer_gone(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, static_cast<short>(POLLRDHUP), 0};
  if (poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

bool key_matches(const std::string& given, const std::string& key) {
  if (given.size() != key.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < key.size(); ++i) diff |= static_cast<unsigned char>(given[i] ^ key[i]);
  return diff == 0;
}

const char* default_error_type(int status) {
  if (status == 401) return "authentication_error";
  if (status == 404) return "not_found_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

std::string default_error_message(int status) {
  switch (status) {
    case 400: return "malformed HTTP request";
    case 404: return "no such endpoint";
    case 405: return "method not allowed";
    case 413: return "the request body is larger than the server's limit";
    case 414: return "the request URI is too long";
    default: return "HTTP error " + std::to_string(status);
  }
}

// Counts a generation reply as open while it lives.
class OpenReply {
 public:
  explicit OpenReply(std::atomic<int64_t>& n) : n_(n) { ++n_; }
  ~OpenReply() { --n_; }
  OpenReply(const OpenReply&) = delete;
  OpenReply& operator=(const OpenReply&) = delete;

 private:
  std::atomic<int64_t>& n_;
};

}  // namespace

std::string ServerOptions::describe() const {
  return str_cat("host ", host, ", port ", port, ", model name '", model_name, "', max-batch ", max_batch,
                 ", max-queue ", max_queue, ", prefill-chunk ", prefill_chunk, ", max body ", max_body_bytes,
                 " bytes, api key ", api_key.empty() ? "off" : "on");
}

Server::Server(ServerOptions options, StepEngine& engine, const text::Tokenizer& tokenizer, ModelTokens tokens)
    : options_(std::move(options)), engine_(engine), tokenizer_(tokenizer), tokens_(tokens), created_(unix_now()) {
  MEGAMOE_CHECK(options_.max_body_bytes > 0, "serve: the body size limit must be positive");
  MEGAMOE_CHECK(options_.max_queue >= 0, "serve: --max-queue must be >= 0");
}

Server::~Server() { shutdown(std::chrono::milliseconds(0)); }

void Server::reply_error(httplib::Response& res, int api, int status, const std::string& type,
                         const std::string& message, const std::string& param, const std::string& code) {
  res.status = status;
  if (status == 503) res.set_header("Retry-After", "1");
  res.set_content(error_body(static_cast<Api>(api), status, type, message, param, code).dump(-1, ' ', false,
                                                                                           json::error_handler_t::replace),
                  "application/json");
}

bool Server::authorized(const httplib::Request& req) const {
  if (options_.api_key.empty()) return true;
  const std::string auth = req.get_header_value("Authorization");
  if (auth.rfind("Bearer ", 0) == 0 && key_matches(auth.substr(7), options_.api_key)) return true;
  return req.has_header("x-api-key") && key_matches(req.get_header_value("x-api-key"), options_.api_key);
}

void Server::log_request(const std::string& id, const std::string& path, int status, const Choices& choices,
                         Clock::time_point start, const std::string& finish) {
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  if (!finish.empty()) metrics_.count_request(finish);
  if (!options_.log_requests) return;
  int64_t out = 0;
  std::string tool_call_error;
  for (const auto& g : choices) {
    out += g->completion_tokens();
    if (tool_call_error.empty()) tool_call_error = g->tool_call_error();
  }
  const double ttft = choices.empty() ? -1.0 : choices.front()->ttft_seconds() * 1000.0;
  // A malformed tool-call block is not an error of the reply (its calls so far
  // went out; the rest was dropped), but the log says so.
  const std::string tool_error =
      tool_call_error.empty()
          ? ""
          : " tool_call_error=" + json(tool_call_error).dump(-1, ' ', false, json::error_handler_t::replace);
  const std::string n = choices.size() > 1 ? " n=" + std::to_string(choices.size()) : "";
  std::fprintf(stderr, "megamoe serve: %s %s status=%d in=%lld out=%lld%s ttft_ms=%.1f dur_ms=%.1f finish=%s%s\n",
               id.c_str(), path.c_str(), status,
               static_cast<long long>(choices.empty() ? 0 : choices.front()->prompt_tokens()),
               static_cast<long long>(out), n.c_str(), ttft, ms, finish.empty() ? "-" : finish.c_str(),
               tool_error.c_str());
}

namespace {

// The finish a request counts as: choice 0's, unless a choice ended otherwise
// than by length or stop (cancelled, error, shutdown).
std::string finish_label(const Choices& choices) {
  for (const auto& g : choices) {
    if (g->reason() != EndReason::kLength && g->reason() != EndReason::kStop) return end_reason_name(g->reason());
  }
  return choices.front()->finish_reason();
}

void cancel_all(const Choices& choices) {
  for (const auto& g : choices) g->cancel();
}

}  // namespace

void Server::handle_generation(const httplib::Request& req, httplib::Response& res, int api_int) {
  const Api api = static_cast<Api>(api_int);
  const auto start = Clock::now();
  const std::string id =
      random_id(api == Api::kChat ? "chatcmpl-" : api == Api::kCompletion ? "cmpl-" : "msg_");
  auto open = std::make_shared<OpenReply>(open_replies_);
  try {
    if (draining_) MEGAMOE_API_ERROR(503, "server_error", "", "shutting_down", "the server is shutting down");
    const json body = parse_body(req.body);
    const ApiContext ctx{tokenizer_, tokens_.bos_id, tokens_.eos_id, engine_.vocab_size(), engine_.max_context()};
    ParsedRequest p = api == Api::kChat         ? parse_chat_request(body, ctx)
                      : api == Api::kCompletion ? parse_completion_request(body, ctx)
                                                : parse_messages_request(body, ctx);
    // Each choice is a sequence of its own in the scheduler.
    auto choices = std::make_shared<Choices>();
    std::vector<std::shared_ptr<Job>> jobs;
    for (int64_t i = 0; i < p.n; ++i) {
      choices->push_back(Generation::create(tokenizer_, p.text, choice_params(p.gen, i)));
      jobs.push_back(choices->back()->job());
    }
    ReplyInfo info{api, id, options_.model_name, unix_now(), p.include_usage, p.gen.want_logprobs,
                   static_cast<int64_t>(p.gen.prompt.size()), p.n};
    std::shared_ptr<ReplyFormat> format = make_reply_format(info);
    scheduler_->submit(jobs);
    const int fd = connection_fd(req);

    if (!p.stream) {
      bool gone = false;
      for (const auto& g : *choices) {
        while (!g->take(kPoll).ended) {
          if (!gone && peer_gone(fd)) {  // nobody to answer: free the slots now
            gone = true;
            cancel_all(*choices);
            scheduler_->poke();
          }
        }
        if (g->reason() == EndReason::kError || g->reason() == EndReason::kShutdown) {
          cancel_all(*choices);  // the reply is an error: the other choices are not needed
          scheduler_->poke();
        }
      }
      for (const auto& g : *choices) {
        if (g->reason() == EndReason::kError) {
          MEGAMOE_API_ERROR(500, "server_error", "", "", g->error());
        } else if (g->reason() == EndReason::kShutdown) {
          MEGAMOE_API_ERROR(503, "server_error", "", "shutting_down", "the server shut down before the reply was done");
        }
      }
      res.set_content(format->whole(*choices).dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
      log_request(id, req.path, 200, *choices, start, finish_label(*choices));
      return;
    }

    struct StreamState {
      bool started = false;
      bool ended = false;
      std::vector<bool> choice_ended;
      std::string finish;  // once ended
    };
    auto state = std::make_shared<StreamState>();
    state->choice_ended.assign(choices->size(), false);
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    const std::string path = req.path;
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, choices, format, state, fd, open](size_t, httplib::DataSink& sink) {
          auto write = [&](const std::string& s) { return s.empty() || sink.write(s.data(), s.size()); };
          auto abandon = [&] {
            cancel_all(*choices);
            scheduler_->poke();
            return false;
          };
          if (!state->started) {
            state->started = true;
            if (!write(format->stream_start())) return abandon();
          }
          // Waits on the first open choice only: the choices decode in the
          // same steps, so the others' news is mostly there by then (a choice
          // still queued delays it by one poll at most).
          bool waited = false;
          bool all_ended = true;
          for (std::size_t i = 0; i < choices->size(); ++i) {
            if (state->choice_ended[i]) continue;
            Generation& g = *(*choices)[i];
            const Batch batch = g.take(waited ? std::chrono::milliseconds(0) : kPoll);
            waited = true;
            const auto index = static_cast<int64_t>(i);
            if ((!batch.deltas.empty() || !batch.logprobs.empty()) && !write(format->stream_batch(batch, index))) {
              return abandon();
            }
            if (!batch.ended) {
              all_ended = false;
              continue;
            }
            state->choice_ended[i] = true;
            if (g.reason() == EndReason::kError || g.reason() == EndReason::kShutdown) {
              // The whole stream ends with the error; the other choices stop.
              state->ended = true;
              state->finish = end_reason_name(g.reason());
              cancel_all(*choices);
              scheduler_->poke();
              const bool ok = write(format->stream_error(g.reason() == EndReason::kError ? g.error()
                                                                                         : "the server shut down"));
              if (ok) sink.done();
              return ok;
            }
            if (!write(format->stream_choice_end(g, index))) return abandon();
          }
          if (all_ended) {
            state->ended = true;
            state->finish = finish_label(*choices);
            if (!write(format->stream_end(*choices))) return false;
            sink.done();
            return true;
          }
          if (peer_gone(fd)) return abandon();
          return true;
        },
        [this, choices, state, id, path, start](bool) {
          if (!state->ended) {
            cancel_all(*choices);
            scheduler_->poke();
          }
          log_request(id, path, 200, *choices, start, state->ended ? state->finish : "cancelled");
        });
  } catch (const ApiError& e) {
    reply_error(res, api_int, e.status(), e.type(), e.what(), e.param(), e.code());
    log_request(id, req.path, e.status(), {}, start, "");
  } catch (const Error& e) {
    reply_error(res, api_int, 400, "invalid_request_error", e.what(), "", "");
    log_request(id, req.path, 400, {}, start, "");
  } catch (const std::exception& e) {
    reply_error(res, api_int, 500, "server_error", e.what(), "", "");
    log_request(id, req.path, 500, {}, start, "");
  }
}

void Server::routes() {
  httplib::Server& s = *http_;
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (req.path.rfind("/v1/", 0) == 0 && !authorized(req)) {
      reply_error(res, static_cast<int>(req.path.rfind("/v1/messages", 0) == 0 ? Api::kMessages : Api::kChat), 401,
                  "authentication_error", "a valid API key is required (Authorization: Bearer KEY or x-api-key: KEY)",
                  "", "invalid_api_key");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const Api api = req.path.rfind("/v1/messages", 0) == 0 ? Api::kMessages : Api::kChat;
    res.set_content(error_body(api, res.status, default_error_type(res.status), default_error_message(res.status), "", "")
                        .dump(),
                    "application/json");
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    res.status = 500;
    res.set_content(error_body(Api::kChat, 500, "server_error", what, "", "").dump(), "application/json");
  });
  s.set_logger([this](const httplib::Request&, const httplib::Response& res) { metrics_.count_reply(res.status); });

  s.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_generation(req, res, static_cast<int>(Api::kChat));
  });
  s.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_generation(req, res, static_cast<int>(Api::kCompletion));
  });
  s.Post("/v1/messages", [this](const httplib::Request& req, httplib::Response& res) {
    handle_generation(req, res, static_cast<int>(Api::kMessages));
  });
  s.Post("/v1/messages/count_tokens", [this](const httplib::Request& req, httplib::Response& res) {
    try {
      const ApiContext ctx{tokenizer_, tokens_.bos_id, tokens_.eos_id, engine_.vocab_size(), engine_.max_context()};
      const ParsedRequest p = parse_messages_request(parse_body(req.body), ctx, /*count_tokens=*/true);
      res.set_content(json{{"input_tokens", p.gen.prompt.size()}}.dump(), "application/json");
    } catch (const ApiError& e) {
      reply_error(res, static_cast<int>(Api::kMessages), e.status(), e.type(), e.what(), e.param(), e.code());
    } catch (const std::exception& e) {
      reply_error(res, static_cast<int>(Api::kMessages), 400, "invalid_request_error", e.what(), "", "");
    }
  });
  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    const json model = {{"id", options_.model_name},
                        {"object", "model"},
                        {"created", created_},
                        {"owned_by", "megamoe"},
                        {"max_model_len", engine_.max_context()}};
    res.set_content(json{{"object", "list"}, {"data", json::array({model})}}.dump(), "application/json");
  });
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const bool draining = draining_.load();
    const bool healthy = scheduler_->healthy();
    res.status = !draining && healthy ? 200 : 503;
    res.set_content(json{{"status", draining ? "shutting_down" : healthy ? "ok" : "unhealthy"}}.dump(),
                    "application/json");
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_.render(), "text/plain; version=0.0.4");
  });
}

int Server::start() {
  MEGAMOE_CHECK(!http_, "serve: the server was already started");
  ::signal(SIGPIPE, SIG_IGN);  // a client gone mid-write is an error return, not a signal
  SchedulerOptions so;
  so.max_batch = options_.max_batch;
  so.max_queue = options_.max_queue;
  so.prefill_chunk = options_.prefill_chunk;
  scheduler_ = std::make_unique<Scheduler>(engine_, so, metrics_);

  http_ = std::make_unique<httplib::Server>();
  const int64_t threads = options_.http_threads > 0 ? options_.http_threads
                                                    : std::min<int64_t>(options_.max_batch + options_.max_queue + 8, 512);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  http_->set_payload_max_length(static_cast<size_t>(options_.max_body_bytes));
  http_->set_keep_alive_timeout(2);
  http_->set_read_timeout(30);
  http_->set_write_timeout(60);
  routes();
  // cpp-httplib 0.11 listens with a backlog of 5, too few for a burst of
  // clients; the listening socket is taken here and given a full backlog
  // after the bind (listen() again only resizes the queue).
  auto listen_fd = std::make_shared<int>(-1);
  http_->set_socket_options([listen_fd](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    *listen_fd = static_cast<int>(sock);
  });
  if (options_.port == 0) {
    port_ = http_->bind_to_any_port(options_.host);
  } else {
    port_ = http_->bind_to_port(options_.host, options_.port) ? options_.port : -1;
  }
  if (port_ < 0) {
    scheduler_->stop();
    MEGAMOE_THROW("serve: cannot listen on ", options_.host, ":", options_.port,
                  " (address in use, not local, or not permitted)");
  }
  if (*listen_fd >= 0) ::listen(*listen_fd, SOMAXCONN);
  listener_ = std::thread([this] { http_->listen_after_bind(); });
  return port_;
}

void Server::shutdown(std::chrono::milliseconds grace) {
  std::lock_guard<std::mutex> lock(shutdown_mu_);
  if (stopped_ || !http_) return;
  stopped_ = true;
  draining_ = true;
  const auto deadline = Clock::now() + grace;
  while (!scheduler_->idle() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  scheduler_->stop();  // ends whatever is left; the handlers write their last events
  const auto written = Clock::now() + std::chrono::seconds(2);
  while (open_replies_.load() > 0 && Clock::now() < written) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  http_->stop();
  if (listener_.joinable()) listener_.join();
}

}  // namespace megamoe::server
