// The agent's status server (/healthz, /readyz, /metrics) against clients that misbehave:
// one that connects and sends nothing must not hold the server (it used a blocking read,
// which Beast's timeouts do not cover), nor the agent's shutdown.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

#include "tests/e2e/uplink_support.hpp"

using namespace outpost::test;

namespace {

// A TCP connection to loopback:port that sends nothing; -1 if it cannot connect.
int silent_client(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

TEST_CASE("a client that sends nothing holds neither the status server nor the shutdown") {
  Pki pki;
  TempDir dir;
  const uint16_t status_port = free_port();
  AgentProc agent(pki, dir.path(), free_port());  // no gateway: only the status server matters
  agent.set_agent_keys("http_listen = \"127.0.0.1:" + std::to_string(status_port) + "\"\n");
  agent.start({});
  std::string health;
  for (int i = 0; i < 100 && health.empty(); ++i) {
    health = http_get(status_port, "/healthz");
    if (health.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE_MESSAGE(health.find(" 200 ") != std::string::npos, agent.log());

  const int silent = silent_client(status_port);
  REQUIRE(silent >= 0);
  // Served while the silent one waits, promptly (the request is not queued behind it).
  const auto asked = std::chrono::steady_clock::now();
  CHECK(http_get(status_port, "/healthz").find(" 200 ") != std::string::npos);
  CHECK(http_get(status_port, "/metrics").find("outpost_agent_backlog_events") !=
        std::string::npos);
  CHECK(std::chrono::steady_clock::now() - asked < std::chrono::seconds(3));

  // The silent client is dropped after the deadline (5 s): its read sees the close.
  char byte;
  timeval tv{15, 0};
  ::setsockopt(silent, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const auto waited = std::chrono::steady_clock::now();
  CHECK(::read(silent, &byte, 1) == 0);
  CHECK(std::chrono::steady_clock::now() - waited < std::chrono::seconds(10));

  // A second silent client, still connected at SIGTERM: the agent stops anyway.
  const int another = silent_client(status_port);
  REQUIRE(another >= 0);
  const auto stopping = std::chrono::steady_clock::now();
  CHECK(agent.stop() == 0);
  CHECK(std::chrono::steady_clock::now() - stopping < std::chrono::seconds(4));
  ::close(silent);
  ::close(another);
}
