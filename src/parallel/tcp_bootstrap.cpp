#include "parallel/tcp_bootstrap.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/error.hpp"

namespace megamoe {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint32_t kMagic = 0x4d4d4f45;  // "MMOE": a stray client is refused, not served
constexpr uint32_t kMaxBlob = 1 << 16;

int64_t env_int(const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text, &end, 10);
  MEGAMOE_CHECK(errno == 0 && end != text && *end == '\0', "environment variable ", name, "='", text,
                "' is not an integer");
  MEGAMOE_CHECK(v >= lo && v <= hi, "environment variable ", name, "=", v, " is outside [", lo, ", ", hi, "]");
  return v;
}

// Closes the socket on scope exit.
struct Socket {
  int fd = -1;
  explicit Socket(int f) : fd(f) {}
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket() {
    if (fd >= 0) ::close(fd);
  }
};

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// Waits until fd is ready for `events`; throws `what` at the deadline.
void wait_ready(int fd, short events, Clock::time_point deadline, const std::string& what) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int ms = remaining_ms(deadline);
    MEGAMOE_CHECK(ms > 0, what);
    const int n = ::poll(&p, 1, ms);
    if (n > 0) return;
    MEGAMOE_CHECK(n == 0 || errno == EINTR, what, " (poll: ", std::strerror(errno), ")");
  }
}

void send_all(int fd, const void* data, size_t n, Clock::time_point deadline, const std::string& peer) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    wait_ready(fd, POLLOUT, deadline, "bootstrap: timed out sending to " + peer);
    const ssize_t sent = ::send(fd, p, n, MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    MEGAMOE_CHECK(sent > 0, "bootstrap: sending to ", peer, " failed: ", std::strerror(errno));
    p += sent;
    n -= static_cast<size_t>(sent);
  }
}

void recv_all(int fd, void* data, size_t n, Clock::time_point deadline, const std::string& peer) {
  auto* p = static_cast<uint8_t*>(data);
  while (n > 0) {
    wait_ready(fd, POLLIN, deadline, "bootstrap: timed out waiting for data from " + peer);
    const ssize_t got = ::recv(fd, p, n, 0);
    if (got < 0 && errno == EINTR) continue;
    MEGAMOE_CHECK(got != 0, "bootstrap: ", peer, " closed the connection early");
    MEGAMOE_CHECK(got > 0, "bootstrap: receiving from ", peer, " failed: ", std::strerror(errno));
    p += got;
    n -= static_cast<size_t>(got);
  }
}

std::string master_name(const BootstrapEnv& env) { return env.master_addr + ":" + std::to_string(env.port); }

// Rank 0: accept world_size - 1 ranks, check each one's hello, send the blob.
void serve_blob(const BootstrapEnv& env, const std::vector<uint8_t>& blob, Clock::time_point deadline) {
  Socket server(::socket(AF_INET, SOCK_STREAM, 0));
  MEGAMOE_CHECK(server.fd >= 0, "bootstrap: socket: ", std::strerror(errno));
  const int on = 1;
  ::setsockopt(server.fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);  // every interface: MASTER_ADDR names this host to the others
  addr.sin_port = htons(static_cast<uint16_t>(env.port));
  MEGAMOE_CHECK(::bind(server.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0, "bootstrap: rank 0 cannot ",
                "listen on port ", env.port, " (MASTER_PORT): ", std::strerror(errno));
  MEGAMOE_CHECK(::listen(server.fd, static_cast<int>(env.world_size)) == 0, "bootstrap: listen: ", std::strerror(errno));
  std::vector<char> joined(static_cast<size_t>(env.world_size), 0);
  for (int64_t served = 1; served < env.world_size;) {
    wait_ready(server.fd, POLLIN, deadline,
               str_cat("bootstrap: rank 0 timed out on port ", env.port, " with ", served - 1, " of ",
                       env.world_size - 1, " ranks joined"));
    Socket peer(::accept(server.fd, nullptr, nullptr));
    if (peer.fd < 0) continue;
    uint32_t hello[2] = {};
    recv_all(peer.fd, hello, sizeof(hello), deadline, "a joining rank");
    const int64_t rank = hello[1];
    if (hello[0] != kMagic) continue;  // a stray client (a port scan, another program): not a rank
    MEGAMOE_CHECK(rank >= 1 && rank < env.world_size, "bootstrap: a peer claims rank ", rank, " outside [1, ",
                  env.world_size, ")");
    MEGAMOE_CHECK(!joined[static_cast<size_t>(rank)], "bootstrap: rank ", rank, " joined twice");
    joined[static_cast<size_t>(rank)] = 1;
    const uint32_t size = static_cast<uint32_t>(blob.size());
    send_all(peer.fd, &size, sizeof(size), deadline, str_cat("rank ", rank));
    send_all(peer.fd, blob.data(), blob.size(), deadline, str_cat("rank ", rank));
    ++served;
  }
}

// Connects to the master, retrying until it listens or the deadline passes.
int connect_to_master(const BootstrapEnv& env, Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(env.port);
  const int rc = ::getaddrinfo(env.master_addr.c_str(), port.c_str(), &hints, &found);
  MEGAMOE_CHECK(rc == 0 && found != nullptr, "bootstrap: MASTER_ADDR '", env.master_addr,
                "' does not resolve: ", ::gai_strerror(rc));
  const sockaddr_in target = *reinterpret_cast<const sockaddr_in*>(found->ai_addr);
  ::freeaddrinfo(found);
  for (;;) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    MEGAMOE_CHECK(fd >= 0, "bootstrap: socket: ", std::strerror(errno));
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&target), sizeof(target)) == 0) return fd;
    const int error = errno;
    ::close(fd);
    MEGAMOE_CHECK(remaining_ms(deadline) > 0, "bootstrap: could not reach the master at ", master_name(env),
                  " (MASTER_ADDR:MASTER_PORT) before the timeout: ", std::strerror(error));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the master may not listen yet
  }
}

}  // namespace

BootstrapEnv bootstrap_env_from_environment() {
  BootstrapEnv env;
  env.world_size = env_int("WORLD_SIZE", 1, 1, 1 << 16);
  env.rank = env_int("RANK", 0, 0, env.world_size - 1);
  env.port = static_cast<int>(env_int("MASTER_PORT", env.port, 1, 65535));
  if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0') env.master_addr = addr;
  MEGAMOE_CHECK(env.world_size == 1 || std::getenv("MASTER_ADDR") != nullptr, "WORLD_SIZE=", env.world_size,
                " needs MASTER_ADDR (the host of rank 0)");
  return env;
}

std::vector<uint8_t> exchange_bootstrap_blob(const BootstrapEnv& env, const std::vector<uint8_t>& blob,
                                             std::chrono::milliseconds timeout) {
  MEGAMOE_CHECK(env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size, "bootstrap: rank ", env.rank,
                " is outside [0, ", env.world_size, ")");
  MEGAMOE_CHECK(env.port >= 1 && env.port <= 65535, "bootstrap: port ", env.port, " is outside [1, 65535]");
  const Clock::time_point deadline = Clock::now() + timeout;
  if (env.rank == 0) {
    MEGAMOE_CHECK(blob.size() <= kMaxBlob, "bootstrap: a blob of ", blob.size(), " bytes is too large");
    if (env.world_size > 1) serve_blob(env, blob, deadline);
    return blob;
  }
  Socket master(connect_to_master(env, deadline));
  const uint32_t hello[2] = {kMagic, static_cast<uint32_t>(env.rank)};
  const std::string peer = "the master at " + master_name(env);
  send_all(master.fd, hello, sizeof(hello), deadline, peer);
  uint32_t size = 0;
  recv_all(master.fd, &size, sizeof(size), deadline, peer);
  MEGAMOE_CHECK(size <= kMaxBlob, "bootstrap: ", peer, " announced ", size, " bytes (more than ", kMaxBlob, ")");
  std::vector<uint8_t> out(size);
  recv_all(master.fd, out.data(), size, deadline, peer);
  return out;
}

}  // namespace megamoe
