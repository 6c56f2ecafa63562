#pragma once
// A load generator for the HTTP source that counts every answer exactly: each thread keeps one
// connection and sends its request again as soon as the previous answer has been read whole,
// so when the run ends there is no request whose outcome the test does not know (wrk counts
// only what it read before it stopped, and the server may have taken more).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace outpost::test {

struct LoadCounts {
  std::map<int, uint64_t> by_status;  // answers read whole, by HTTP status
  uint64_t unanswered = 0;            // a connection failed with a request outstanding
  uint64_t connections = 0;           // connections made (one per thread while none fails)
  uint64_t total_2xx() const {
    uint64_t n = 0;
    for (const auto& [status, count] : by_status) n += (status / 100 == 2) ? count : 0;
    return n;
  }
  uint64_t of(int status) const {
    auto it = by_status.find(status);
    return it == by_status.end() ? 0 : it->second;
  }
};

class HttpLoad {
 public:
  // `request` is sent as is, over and over, on `threads` keep-alive connections.
  HttpLoad(uint16_t port, std::string request, int threads) : port_(port), request_(request) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { loop(); });
  }
  ~HttpLoad() { stop(); }
  LoadCounts stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
    std::lock_guard lock(mu_);
    return counts_;
  }
  uint64_t answered() const { return answered_.load(); }

 private:
  int connect_once() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port_);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      return -1;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
  }
  // One answer: its status, or -1 if the connection failed before it was read whole.
  static int read_answer(int fd, std::string& in) {
    while (true) {
      const size_t end = in.find("\r\n\r\n");
      if (end != std::string::npos) {
        size_t length = 0;
        const size_t cl = in.find("Content-Length: ");
        if (cl != std::string::npos && cl < end) length = std::stoul(in.substr(cl + 16));
        if (in.size() >= end + 4 + length) {
          const int status = std::stoi(in.substr(9, 3));
          in.erase(0, end + 4 + length);
          return status;
        }
      }
      char buf[16384];
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) return -1;
      in.append(buf, static_cast<size_t>(n));
    }
  }
  void loop() {
    std::map<int, uint64_t> mine;
    uint64_t unanswered = 0, connections = 0;
    int fd = -1;
    std::string in;
    while (!stop_) {
      if (fd < 0) {
        if ((fd = connect_once()) < 0) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
          continue;
        }
        ++connections;
      }
      if (::send(fd, request_.data(), request_.size(), MSG_NOSIGNAL) !=
          static_cast<ssize_t>(request_.size())) {
        ++unanswered;
        ::close(fd);
        fd = -1;
        in.clear();
        continue;
      }
      const int status = read_answer(fd, in);
      if (status < 0) {
        ++unanswered;
        ::close(fd);
        fd = -1;
        in.clear();
        continue;
      }
      ++mine[status];
      ++answered_;
    }
    if (fd >= 0) ::close(fd);
    std::lock_guard lock(mu_);
    for (const auto& [status, n] : mine) counts_.by_status[status] += n;
    counts_.unanswered += unanswered;
    counts_.connections += connections;
  }

  uint16_t port_;
  std::string request_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> answered_{0};
  std::vector<std::thread> threads_;
  std::mutex mu_;
  LoadCounts counts_;
};

}  // namespace outpost::test
