// The `megamoe serve` program itself: starts on a free port (--port 0),
// answers, and exits 0 on SIGTERM after finishing what it was doing; bad
// arguments end with exit code 1 and a message.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "server_test_util.hpp"

extern char** environ;

namespace megamoe::server::testing {
namespace {

struct Child {
  pid_t pid = -1;
  FILE* err = nullptr;  // the child's stderr
};

Child spawn_serve(const std::vector<std::string>& extra) {
  std::vector<std::string> args = {MEGAMOE_BINARY_PATH, "serve", "--model", kData + "/tiny-text", "--tokenizer",
                                   kData + "/tiny-tokenizer/tokenizer.json", "--device", "cpu", "--port", "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  Child c;
  EXPECT_EQ(posix_spawn(&c.pid, argv[0], &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  c.err = fdopen(fds[0], "r");
  return c;
}

// Reads stderr lines until the "listening on http://HOST:PORT" one; returns PORT (-1 at EOF).
int wait_for_port(Child& c, std::string* log) {
  char line[4096];
  while (std::fgets(line, sizeof(line), c.err)) {
    *log += line;
    const std::string s = line;
    const auto at = s.find("listening on http://127.0.0.1:");
    if (at != std::string::npos) return std::stoi(s.substr(at + 30));
  }
  return -1;
}

int wait_exit(Child& c, std::string* log) {
  char line[4096];
  while (std::fgets(line, sizeof(line), c.err)) *log += line;
  std::fclose(c.err);
  int status = 0;
  waitpid(c.pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(ServeCli, StartsAnswersAndExitsCleanlyOnSigterm) {
  Child c = spawn_serve({"--max-batch", "2", "--served-model-name", "tiny"});
  std::string log;
  const int port = wait_for_port(c, &log);
  ASSERT_GT(port, 0) << log;
  httplib::Client client("127.0.0.1", port);
  const auto models = client.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "tiny");
  const auto r = client.Post("/v1/chat/completions",
                             R"({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "ignore_eos": true})",
                             "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["usage"]["completion_tokens"], 5);
  kill(c.pid, SIGTERM);
  EXPECT_EQ(wait_exit(c, &log), 0) << log;
  EXPECT_NE(log.find("status=200 in="), std::string::npos) << "one log line per request: " << log;
  EXPECT_NE(log.find("stopped"), std::string::npos) << log;
}

TEST(ServeCli, BadArgumentsExitWithAMessage) {
  Child c = spawn_serve({"--max-context", "99999999"});
  std::string log;
  EXPECT_EQ(wait_exit(c, &log), 1) << log;
  EXPECT_NE(log.find("max_position_embeddings"), std::string::npos) << log;
}

}  // namespace
}  // namespace megamoe::server::testing
