#pragma once
// A real mosquitto of its own on a free loopback port, for the tests of the MQTT source and of
// the agent's reload; mosquitto_pub publishes to it at QoS 1.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <memory>
#include <string>
#include <thread>

#include "tests/e2e/uplink_support.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace outpost::test {

// A mosquitto of its own on a free loopback port; `listener_extra` configures its listener.
struct Broker {
  TempDir dir;
  uint16_t port = free_port();
  std::unique_ptr<Child> child;
  explicit Broker(const std::string& listener_extra = "") {
    write_file(dir.file("mosquitto.conf"),
               "user root\nlistener " + std::to_string(port) + " 127.0.0.1\n" + listener_extra +
                   "allow_anonymous true\npersistence false\nmax_queued_messages 100000\n");
    child = std::make_unique<Child>(
        std::vector<std::string>{"/usr/sbin/mosquitto", "-c", dir.file("mosquitto.conf")}, false);
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!port_open(port) && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    REQUIRE(port_open(port));
  }
  ~Broker() {
    child->signal(SIGTERM);
    child->wait();
  }
  static bool port_open(uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
  }
  // mosquitto_pub, QoS 1: each line of `lines` a message (-l), or `bytes` as one message.
  Output publish(const std::string& topic, const std::string& lines) const {
    return run({"/usr/bin/mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(port), "-q", "1",
                "-t", topic, "-l"},
               lines);
  }
  Output publish_retained(const std::string& topic, const std::string& message) const {
    return run({"/usr/bin/mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(port), "-q", "1",
                "-r", "-t", topic, "-m", message});
  }
  Output publish_file(const std::string& topic, const std::string& bytes) const {
    const std::string path = dir.file("payload.bin");
    write_file(path, bytes);
    return run({"/usr/bin/mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(port), "-q", "1",
                "-t", topic, "-f", path});
  }
};

}  // namespace outpost::test
