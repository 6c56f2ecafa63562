// pixel_bench: the tracking pixel under load. Starts a real outpost-agent with the HTTP source
// (one thread) on loopback, drives it with wrk (keep-alive), then waits until every hit wrk
// got an answer for is in the buffer. Prints requests/s, p50 and p99 latency, the agent's CPU
// and peak RSS, and the events/s that reached the buffer.
//
// Each run also drives, with the same wrk command, a reference: a one-thread epoll server
// that answers every read with the agent's pixel response bytes and does nothing else. It is
// the ceiling that this machine and this load generator allow (wrk shares the 2 cores).
//
// Usage: pixel_bench [--seconds S] [--connections C] [--runs R] [--threads T]
// (defaults 10, 50, 3, 1; T is the agent's sources.http.threads)
// Needs wrk (Debian package). Each figure is the median of the runs; the last lines are the
// figures.
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "agent/buffer/buffer_inspector.hpp"
#include "bench/bench_support.hpp"
#include "tests/e2e/uplink_support.hpp"
#include "tests/support/uplink_client.hpp"

using namespace outpost;
using bench::median;

namespace {

double parse_ms(const std::string& v) {  // wrk prints 812.00us, 1.20ms, 1.01s
  double x = std::stod(v);
  if (v.find("us") != std::string::npos) return x / 1000;
  if (v.find("ms") != std::string::npos) return x;
  return x * 1000;
}

std::string after(const std::string& text, const std::string& label) {
  auto at = text.find(label);
  if (at == std::string::npos) return "";
  at += label.size();
  while (at < text.size() && text[at] == ' ') ++at;
  return text.substr(at, text.find_first_of(" \n", at) - at);
}

struct Run {
  double rps = 0, p50_ms = 0, p99_ms = 0, cpu_cores = 0, rss_mib = 0, buffered_per_s = 0;
  uint64_t requests = 0, buffered = 0;
  double reference_rps = 0, reference_p99_ms = 0;
};

struct WrkResult {
  double rps = 0, p50_ms = 0, p99_ms = 0;
  uint64_t requests = 0;
};

WrkResult run_wrk(uint16_t port, int seconds, int connections) {
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/p.gif?site=bench&utm=x";
  auto out = test::run({"/usr/bin/wrk", "-t1", "-c" + std::to_string(connections),
                        "-d" + std::to_string(seconds) + "s", "--latency", url});
  WrkResult r;
  r.rps = std::stod("0" + after(out.out, "Requests/sec:"));
  r.p50_ms = parse_ms(after(out.out, " 50%"));
  r.p99_ms = parse_ms(after(out.out, " 99%"));
  auto in = out.out.find(" requests in ");
  r.requests = std::stoull(out.out.substr(out.out.rfind('\n', in) + 1));
  return r;
}

// The agent's whole answer to one pixel request (headers and image), read on a raw socket.
std::string pixel_response_bytes(uint16_t port) {
  test::UplinkClient c;
  std::string got;
  if (!c.connect(port) || !c.send_raw("GET /p.gif?site=bench&utm=x HTTP/1.1\r\nHost: x\r\n\r\n")) {
    return got;
  }
  // The GIF is 43 bytes after the blank line.
  for (int i = 0; i < 50 && (got.find("\r\n\r\n") == std::string::npos ||
                             got.size() < got.find("\r\n\r\n") + 4 + 43);
       ++i) {
    auto more = c.receive_raw(100);
    if (!more) break;
    got += *more;
  }
  return got;
}

// The reference server's loop, in a child process: every readable connection gets
// `response` once per read, as a client that sends one request at a time expects.
[[noreturn]] void serve_reference(int listener, const std::string& response) {
  const int ep = ::epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listener;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
  epoll_event ready[256];
  char buf[4096];
  for (;;) {
    const int n = ::epoll_wait(ep, ready, 256, -1);
    for (int i = 0; i < n; ++i) {
      const int fd = ready[i].data.fd;
      if (fd == listener) {
        const int c = ::accept(listener, nullptr, nullptr);
        if (c < 0) continue;
        epoll_event cev{};
        cev.events = EPOLLIN;
        cev.data.fd = c;
        ::epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        continue;
      }
      if (::recv(fd, buf, sizeof buf, 0) <= 0 ||
          ::send(fd, response.data(), response.size(), MSG_NOSIGNAL) < 0) {
        ::close(fd);
      }
    }
  }
}

WrkResult reference_run(const std::string& response, int seconds, int connections) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(listener, 1024) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    std::fprintf(stderr, "pixel_bench: cannot listen for the reference server\n");
    std::exit(1);
  }
  const pid_t server = ::fork();
  if (server == 0) serve_reference(listener, response);
  ::close(listener);
  WrkResult r = run_wrk(ntohs(a.sin_port), seconds, connections);
  ::kill(server, SIGKILL);
  ::waitpid(server, nullptr, 0);
  return r;
}

Run one_run(const std::string& dir, int seconds, int connections, int threads) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const uint16_t port = test::free_port();
  const std::string buffer = dir + "/buffer.db";
  test::write_file(dir + "/agent.toml",
                   "[agent]\nid = \"pixel-bench\"\nhttp_listen = \"\"\nlog_level = \"warn\"\n"
                   "[buffer]\npath = \"" +
                       buffer +
                       "\"\n[sources.http]\nenabled = true\nthreads = " + std::to_string(threads) +
                       "\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\n");
  pid_t agent = ::fork();
  if (agent == 0) {
    ::execl(OUTPOST_AGENT_BIN, OUTPOST_AGENT_BIN, "run", "--config", (dir + "/agent.toml").c_str(),
            nullptr);
    ::_exit(127);
  }
  for (int i = 0; i < 100 && test::http_get(port, "/p.gif").empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const std::string response = pixel_response_bytes(port);
  if (response.find("HTTP/1.1 200 OK") != 0) {
    std::fprintf(stderr, "pixel_bench: the agent did not answer a pixel request\n");
    std::exit(1);
  }
  const WrkResult w = run_wrk(port, seconds, connections);
  Run r;
  r.rps = w.rps;
  r.p50_ms = w.p50_ms;
  r.p99_ms = w.p99_ms;
  r.requests = w.requests + 2;  // the readiness probe and the raw request above
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 600; ++i) {  // until every answered hit is in the buffer
    auto inspector = agent::BufferInspector::open(buffer);
    auto s = inspector ? inspector->stats() : Result<agent::BufferStats>(Error{});
    if (s) r.buffered = s->pending_events;
    if (r.buffered + 1 >= r.requests) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const double drain = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.buffered_per_s = static_cast<double>(r.buffered) / (seconds + drain);
  const bench::ProcStats used = bench::stop_and_measure(agent);
  r.cpu_cores = used.cpu_seconds / (seconds + drain);
  r.rss_mib = used.peak_rss_mib;
  const WrkResult ref = reference_run(response, seconds, connections);
  r.reference_rps = ref.rps;
  r.reference_p99_ms = ref.p99_ms;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Flags flags(
      "pixel_bench", argc, argv,
      {{"seconds", "10"}, {"connections", "50"}, {"runs", "3"}, {"threads", "1"}});
  const auto threads = static_cast<int>(flags.number("threads"));
  const auto seconds = static_cast<int>(flags.number("seconds"));
  const auto connections = static_cast<int>(flags.number("connections"));
  const auto runs = static_cast<int>(flags.number("runs"));
  const std::string dir = std::filesystem::temp_directory_path().string() + "/outpost-pixel-bench";
  std::vector<double> rps, p50, p99, cpu, rss, buffered, ref_rps, ref_p99;
  bool all_buffered = true;
  for (int i = 0; i < runs; ++i) {
    Run r = one_run(dir, seconds, connections, threads);
    all_buffered = all_buffered && r.buffered + 1 >= r.requests;
    std::printf(
        "run %d: %.0f req/s, p50 %.3f ms, p99 %.3f ms, agent %.2f cores, peak RSS %.1f MiB, "
        "%llu of %llu answered hits in the buffer; reference %.0f req/s, p99 %.3f ms\n",
        i + 1, r.rps, r.p50_ms, r.p99_ms, r.cpu_cores, r.rss_mib,
        static_cast<unsigned long long>(r.buffered), static_cast<unsigned long long>(r.requests),
        r.reference_rps, r.reference_p99_ms);
    ref_rps.push_back(r.reference_rps);
    ref_p99.push_back(r.reference_p99_ms);
    rps.push_back(r.rps);
    p50.push_back(r.p50_ms);
    p99.push_back(r.p99_ms);
    cpu.push_back(r.cpu_cores);
    rss.push_back(r.rss_mib);
    buffered.push_back(r.buffered_per_s);
  }
  std::filesystem::remove_all(dir);
  std::printf(
      "wrk -t1 -c%d -d%ds, keep-alive, GET /p.gif; sources.http.threads = %d; medians of %d "
      "runs\n",
      connections, seconds, threads, runs);
  std::printf("requests/s: %.0f\n", median(rps));
  std::printf("latency: p50 %.3f ms, p99 %.3f ms\n", median(p50), median(p99));
  std::printf("agent: %.2f cores, peak RSS %.1f MiB\n", median(cpu), median(rss));
  std::printf(
      "reference (one-thread epoll server, same response bytes, no work): %.0f req/s, "
      "p99 %.3f ms; the agent reached %.1f %% of it\n",
      median(ref_rps), median(ref_p99), 100 * median(rps) / median(ref_rps));
  std::printf("events/s into the buffer: %.0f; every answered hit in the buffer: %s\n",
              median(buffered), all_buffered ? "yes" : "NO");
  return all_buffered ? 0 : 1;
}
