// A bounded soak: 8 clients for ~10 s (MEGAMOE_SOAK_SECONDS to change it)
// send a mix of streamed and whole chat, completion and Anthropic requests,
// streams abandoned midway and malformed bodies at one server with 4 slots.
// Every reply must be the expected one (no 5xx, no transport error), all
// slots free at the end, and resident memory flat after the warm-up.
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>

#include "server_test_util.hpp"

namespace megamoe::server::testing {
namespace {

int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

TEST(ServerSoak, ManyClientsNoErrorsFlatMemory) {
  const char* env = std::getenv("MEGAMOE_SOAK_SECONDS");
  const double seconds = env ? std::atof(env) : 10.0;
  ServerOptions o;
  o.max_batch = 4;
  o.max_queue = 64;
  o.prefill_chunk = 16;
  TestServer s(o);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> requests{0}, errors{0};
  std::atomic<int64_t> rss_after_warmup{0};
  std::mutex log_mu;
  std::string first_error;
  auto fail = [&](const std::string& what) {
    ++errors;
    std::lock_guard<std::mutex> lock(log_mu);
    if (first_error.empty()) first_error = what;
  };
  auto client = [&](int seed) {
    std::mt19937 rng(static_cast<unsigned>(seed));
    while (!stop.load()) {
      const int kind = static_cast<int>(rng() % 6);
      const int n = 1 + static_cast<int>(rng() % 40);
      const std::string user = "soak " + std::to_string(rng() % 1000);
      json chat = {{"messages", json::array({json{{"role", "user"}, {"content", user}}})},
                   {"max_tokens", n},
                   {"ignore_eos", true},
                   {"temperature", (rng() % 2) ? 0.0 : 0.7}};
      ++requests;
      if (kind == 0) {
        const Reply r = post(s, "/v1/chat/completions", chat.dump());
        if (r.status != 200 || r.json_body["usage"]["completion_tokens"] != n) fail("chat: " + r.body);
      } else if (kind == 1 || kind == 2) {
        chat["stream"] = true;
        const int stop_after = kind == 2 ? 1 + static_cast<int>(rng() % 5) : 0;
        const Stream st = post_stream(s, "/v1/chat/completions", chat.dump(), stop_after);
        if (st.status != 200) fail("stream: " + st.error + " " + st.raw);
        if (kind == 1 && (st.data.empty() || st.data.back() != "[DONE]")) fail("stream without [DONE]: " + st.raw);
      } else if (kind == 3) {
        const Reply r = post(s, "/v1/completions", json{{"prompt", user}, {"max_tokens", n}, {"ignore_eos", true}}.dump());
        if (r.status != 200) fail("completion: " + r.body);
      } else if (kind == 4) {
        json m = {{"max_tokens", n}, {"ignore_eos", true}, {"messages", chat["messages"]}, {"stream", (rng() % 2) == 0}};
        const Reply r = post(s, "/v1/messages", m.dump());
        if (r.status != 200) fail("messages: " + r.body);
      } else {
        const Reply r = post(s, "/v1/chat/completions", R"({"messages": [{"role": "user", "content": 7}]})");
        if (r.status != 400) fail("bad request: " + r.body);
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) threads.emplace_back(client, i + 1);
  const auto warmup = std::chrono::duration<double>(std::min(2.0, seconds / 4));
  std::this_thread::sleep_for(warmup);
  rss_after_warmup = resident_bytes();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds) - warmup);
  stop = true;
  for (auto& t : threads) t.join();
  const int64_t rss_end = resident_bytes();
  EXPECT_EQ(errors.load(), 0) << first_error;
  EXPECT_GT(requests.load(), 100);
  EXPECT_TRUE(eventually([&] { return metric(s, "megamoe_state_slots_in_use") == 0; }));
  EXPECT_EQ(metric(s, "megamoe_requests_waiting"), 0);
  EXPECT_LT(rss_end - rss_after_warmup.load(), int64_t{32} << 20)
      << "resident memory grew from " << rss_after_warmup.load() << " to " << rss_end << " bytes";
  std::printf("soak: %lld requests in %.0f s, resident %lld -> %lld bytes\n", static_cast<long long>(requests.load()),
              seconds, static_cast<long long>(rss_after_warmup.load()), static_cast<long long>(rss_end));
}

}  // namespace
}  // namespace megamoe::server::testing
