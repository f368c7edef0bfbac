// The several-host bootstrap (src/parallel/tcp_bootstrap.hpp) between real
// processes on this host: rank 0 serves a 128-byte id (an ncclUniqueId's
// size) and the forked ranks receive exactly those bytes; an unreachable
// master, a rank that never joins and bad environment values are errors
// within the timeout, never hangs.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>

#include "core/error.hpp"
#include "parallel/tcp_bootstrap.hpp"

namespace megamoe {
namespace {

using std::chrono::milliseconds;

// A port nothing listens on right now (the kernel's pick for port 0).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::vector<uint8_t> id_bytes() {
  std::vector<uint8_t> id(128);
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(i * 37 + 11);
  return id;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TcpBootstrap, RanksInOtherProcessesReceiveRankZerosBytes) {
  constexpr int64_t kWorld = 3;
  const int port = free_port();
  std::vector<pid_t> children;
  for (int64_t rank = 1; rank < kWorld; ++rank) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {  // a joining rank: exit 0 only with exactly rank 0's bytes
      int code = 3;
      try {
        const auto got = exchange_bootstrap_blob({rank, kWorld, "localhost", port}, {}, milliseconds(20000));
        code = got == id_bytes() ? 0 : 2;
      } catch (...) {
        code = 1;
      }
      ::_exit(code);
    }
    children.push_back(pid);
  }
  const auto served = exchange_bootstrap_blob({0, kWorld, "127.0.0.1", port}, id_bytes(), milliseconds(20000));
  EXPECT_EQ(served, id_bytes());
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the exchange threw, 2: wrong bytes";
  }
}

TEST(TcpBootstrap, AnUnreachableMasterIsAnErrorAfterTheTimeout) {
  const auto start = std::chrono::steady_clock::now();
  const std::string message =
      error_of([&] { exchange_bootstrap_blob({1, 2, "127.0.0.1", free_port()}, {}, milliseconds(300)); });
  EXPECT_NE(message.find("could not reach the master at 127.0.0.1:"), std::string::npos) << message;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_NE(error_of([] { exchange_bootstrap_blob({1, 2, "no-such-host.invalid", 29500}, {}, milliseconds(300)); })
                .find("does not resolve"),
            std::string::npos);
}

TEST(TcpBootstrap, RankZeroTimesOutWhenARankNeverJoins) {
  const std::string message =
      error_of([&] { exchange_bootstrap_blob({0, 2, "127.0.0.1", free_port()}, id_bytes(), milliseconds(300)); });
  EXPECT_NE(message.find("rank 0 timed out on port"), std::string::npos) << message;
  EXPECT_NE(message.find("0 of 1 ranks joined"), std::string::npos) << message;
}

// Sets the four variables for one test and restores "unset" after it.
struct ScopedEnv {
  ScopedEnv(const char* rank, const char* world, const char* addr, const char* port) {
    set("RANK", rank);
    set("WORLD_SIZE", world);
    set("MASTER_ADDR", addr);
    set("MASTER_PORT", port);
  }
  ~ScopedEnv() {
    for (const char* name : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) ::unsetenv(name);
  }
  static void set(const char* name, const char* value) {
    if (value == nullptr) {
      ::unsetenv(name);
    } else {
      ::setenv(name, value, 1);
    }
  }
};

TEST(TcpBootstrap, EnvironmentIsReadAndCheckedByName) {
  {
    ScopedEnv env("1", "2", "10.0.0.5", "29600");
    const BootstrapEnv e = bootstrap_env_from_environment();
    EXPECT_EQ(e.rank, 1);
    EXPECT_EQ(e.world_size, 2);
    EXPECT_EQ(e.master_addr, "10.0.0.5");
    EXPECT_EQ(e.port, 29600);
  }
  {
    ScopedEnv env(nullptr, nullptr, nullptr, nullptr);  // one process
    EXPECT_EQ(bootstrap_env_from_environment().world_size, 1);
  }
  const auto error_with = [](const char* rank, const char* world, const char* addr, const char* port) {
    ScopedEnv env(rank, world, addr, port);
    return error_of([] { bootstrap_env_from_environment(); });
  };
  EXPECT_NE(error_with("2", "2", "h", "1").find("RANK=2 is outside [0, 1]"), std::string::npos);
  EXPECT_NE(error_with("0", "two", "h", "1").find("WORLD_SIZE='two' is not an integer"), std::string::npos);
  EXPECT_NE(error_with("0", "2", "h", "70000").find("MASTER_PORT=70000 is outside [1, 65535]"), std::string::npos);
  EXPECT_NE(error_with("0", "2", nullptr, "1").find("needs MASTER_ADDR"), std::string::npos);
  EXPECT_NE(error_with("-1", "2", "h", "1").find("RANK=-1"), std::string::npos);
}

}  // namespace
}  // namespace megamoe
