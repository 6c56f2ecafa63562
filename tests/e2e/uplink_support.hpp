#pragma once
// Real processes for the uplink's end-to-end tests: a development PKI made by
// deploy/certs/make-certs, outpost-gateway and outpost-agent started from their binaries with
// configuration files written here, all on loopback.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include "tests/support/file_sink_reader.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace outpost::test {

inline uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

inline void raise_fd_limit() {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  r.rlim_cur = r.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &r);
}

// One HTTP request on loopback (the connection closed after it): the whole answer, status
// line, headers and body; what came within `timeout_s` seconds; "" if nothing listens.
inline std::string http_exchange(uint16_t port, const std::string& request, int timeout_s = 10) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  (void)!::write(fd, request.data(), request.size());
  std::string out;
  char buf[8192];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

// "GET path" on loopback: the status line and body; what came within 10 s.
inline std::string http_get(uint16_t port, const std::string& path) {
  return http_exchange(port,
                       "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
}

// A metric's value from Prometheus text ("name{labels} value"), 0 when absent.
inline double metric(const std::string& text, const std::string& series) {
  auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return 0;
  return std::stod(text.substr(at + series.size() + 2));
}

struct Pki {
  TempDir dir;
  std::string main, other;
  Pki() {
    main = dir.file("pki");
    other = dir.file("other");
    const std::string script = std::string(OUTPOST_SOURCE_DIR) + "/deploy/certs/make-certs";
    REQUIRE(run({script, main, "--devices", "3", "--expired-device", "device-old"}).exit_code == 0);
    REQUIRE(run({script, other, "--devices", "1", "--ca-name", "Another CA"}).exit_code == 0);
  }
};

inline void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A program under test, started through /bin/sh so that its stderr goes to a log file.
class ManagedProcess {
 public:
  void kill9() {
    child_->signal(SIGKILL);
    child_->wait();
    child_.reset();
  }
  int stop() {
    child_->signal(SIGTERM);
    int status = child_->wait();
    child_.reset();
    return status;
  }
  void signal(int sig) { child_->signal(sig); }
  bool running() const { return child_ != nullptr; }
  pid_t pid() const { return child_ ? child_->pid() : -1; }
  std::string log() const { return read_text(log_path_); }

 protected:
  explicit ManagedProcess(std::string log_path) : log_path_(std::move(log_path)) {}
  void spawn(const std::string& command) {
    child_ = std::make_unique<Child>(
        std::vector<std::string>{"/bin/sh", "-c", "exec " + command + " 2>>" + log_path_});
  }
  std::unique_ptr<Child> child_;

 private:
  std::string log_path_;
};

class GatewayProc : public ManagedProcess {
 public:
  // `extra`: more tables after [sink.file]; `tls_keys`: more keys of [tls].
  GatewayProc(const Pki& pki, const std::string& dir, uint16_t port, const std::string& extra = "",
              const std::string& tls_keys = "")
      : ManagedProcess(dir + "/gateway.log"), config_(dir + "/gateway.toml"), dir_(dir) {
    write_file(config_, "[gateway]\nlisten = \"127.0.0.1:" + std::to_string(port) +
                            "\"\nhttp_listen = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n"
                            "[tls]\nca_file = \"" +
                            pki.main + "/ca.crt\"\ncert_file = \"" + pki.main +
                            "/gateway.crt\"\nkey_file = \"" + pki.main + "/gateway.key\"\n" +
                            tls_keys + "[sink.file]\ndir = \"" + dir + "/sink\"\n" + extra);
  }
  std::string sink_dir() const { return dir_ + "/sink"; }

  void start() {
    spawn(std::string(OUTPOST_GATEWAY_BIN) + " -c " + config_);
    std::string out;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (out.find("http_port=") == std::string::npos ||
           out.find('\n', out.find("http_port=")) == std::string::npos) {
      const bool alive = child_->read_some(out, 100);
      if (!alive || std::chrono::steady_clock::now() >= end) {
        throw std::runtime_error(
            std::string(alive ? "gateway did not start: " : "gateway exited: ") + log());
      }
    }
    http_port_ = static_cast<uint16_t>(std::stoi(out.substr(out.find("http_port=") + 10)));
  }
  uint16_t http_port() const { return http_port_; }

 private:
  std::string config_, dir_;
  uint16_t http_port_ = 0;
};

struct AgentSetup {
  std::string device = "device-1";
  uint64_t events = 0;  // generator: 0 = no generator
  uint64_t rate = 1'000'000;
};

class AgentProc : public ManagedProcess {
 public:
  AgentProc(const Pki& pki, const std::string& dir, uint16_t gateway_port)
      : ManagedProcess(dir + "/agent.log"), pki_(pki), dir_(dir), port_(gateway_port) {}
  std::string buffer_path() const { return dir_ + "/buffer.db"; }
  // Replaces the single endpoint (failover lists).
  void set_endpoints(const std::string& endpoints) { endpoints_ = endpoints; }
  // More keys for the [uplink] table.
  void set_extra(const std::string& uplink_keys) { extra_ = uplink_keys; }
  // More keys for the [agent] table.
  void set_agent_keys(const std::string& agent_keys) { agent_keys_ = agent_keys; }
  // More keys for the [buffer] table.
  void set_buffer_keys(const std::string& buffer_keys) { buffer_keys_ = buffer_keys; }
  std::string config_path() const { return dir_ + "/agent.toml"; }

  void start(const AgentSetup& s) {
    const std::string config = dir_ + "/agent.toml";
    std::string text =
        "[agent]\nid = \"" + s.device + "\"\n" + agent_keys_ + "[buffer]\npath = \"" +
        buffer_path() + "\"\n" + buffer_keys_ + "[uplink]\nendpoints = \"" +
        (endpoints_.empty() ? "127.0.0.1:" + std::to_string(port_) : endpoints_) +
        "\"\nserver_name = \"localhost\"\nca_file = \"" + pki_.main + "/ca.crt\"\ncert_file = \"" +
        pki_.main + "/" + s.device + ".crt\"\nkey_file = \"" + pki_.main + "/" + s.device +
        ".key\"\nbackoff_initial = \"50ms\"\nbackoff_max = \"500ms\"\n" + extra_;
    if (s.events > 0) {
      text += "[generator]\nenabled = true\nevents = " + std::to_string(s.events) +
              "\nrate = " + std::to_string(s.rate) + "\n";
    }
    write_file(config, text);
    spawn(std::string(OUTPOST_AGENT_BIN) + " run --config " + config);
  }

 private:
  const Pki& pki_;
  std::string dir_;
  uint16_t port_;
  std::string endpoints_, extra_, agent_keys_, buffer_keys_;
};

// Whether the agent's synthetic generator finished its run since the agent last started (the
// log says so after the last start): a killed agent's restarted generator makes more events.
inline bool generator_finished(const std::string& log) {
  const size_t started = log.rfind("started; buffer");
  return started != std::string::npos &&
         log.find("generator: generated", started) != std::string::npos;
}

// Every seq 1..last of `agent` exactly once in the sink, and nothing else.
inline void check_file_sink_exactly_once(const std::string& sink, const std::string& agent,
                                         uint64_t last) {
  bool frames_ok = false;
  auto lines = read_sink(sink, &frames_ok);
  CHECK(frames_ok);
  std::set<uint64_t> seqs;
  uint64_t duplicates = 0, foreign = 0;
  for (const auto& l : lines) {
    if (l.agent_id != agent) {
      ++foreign;
      continue;
    }
    if (!seqs.insert(l.seq).second) ++duplicates;
  }
  uint64_t lost = 0;
  for (uint64_t s = 1; s <= last; ++s) lost += seqs.count(s) == 0;
  MESSAGE(lines.size() << " lines in the sink; " << lost << " lost, " << duplicates
                       << " duplicated, of seqs 1.." << last);
  CHECK(lost == 0);
  CHECK(duplicates == 0);
  CHECK(foreign == 0);
  CHECK(seqs.size() == last);
}

// For each agent, every seq 1..last exactly once in the sink; other agents' lines are allowed.
inline void check_file_sink_exactly_once_of(const std::string& sink,
                                            const std::map<std::string, uint64_t>& lasts) {
  bool frames_ok = false;
  auto lines = read_sink(sink, &frames_ok);
  CHECK(frames_ok);
  std::map<std::string, std::set<uint64_t>> seqs;
  std::map<std::string, uint64_t> duplicates;
  for (const auto& l : lines) {
    if (!seqs[l.agent_id].insert(l.seq).second) ++duplicates[l.agent_id];
  }
  for ([[maybe_unused]] const auto& [agent, last] : lasts) {
    INFO(agent);
    CHECK(duplicates[agent] == 0);
    CHECK(seqs[agent].size() == last);
    CHECK((seqs[agent].empty() || *seqs[agent].rbegin() == last));
  }
}

}  // namespace outpost::test
