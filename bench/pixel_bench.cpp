// pixel_bench: the tracking pixel under load. Starts a real outpost-agent with the HTTP source
// (one thread) on loopback, drives it with wrk (keep-alive), then waits until every hit wrk
// got an answer for is in the buffer. Prints requests/s, p50 and p99 latency, the agent's CPU
// and peak RSS, and the events/s that reached the buffer.
//
// Usage: pixel_bench [--seconds S] [--connections C] [--runs R]   (defaults 10, 50, 3)
// Needs wrk (Debian package). Each figure is the median of the runs; the last lines are the
// figures.
#include <sys/resource.h>
#include <sys/wait.h>

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
};

Run one_run(const std::string& dir, int seconds, int connections) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const uint16_t port = test::free_port();
  const std::string buffer = dir + "/buffer.db";
  test::write_file(dir + "/agent.toml",
                   "[agent]\nid = \"pixel-bench\"\nhttp_listen = \"\"\nlog_level = \"warn\"\n"
                   "[buffer]\npath = \"" +
                       buffer +
                       "\"\n[sources.http]\nenabled = true\n"
                       "listen = \"127.0.0.1:" +
                       std::to_string(port) + "\"\n");
  pid_t agent = ::fork();
  if (agent == 0) {
    ::execl(OUTPOST_AGENT_BIN, OUTPOST_AGENT_BIN, "run", "--config", (dir + "/agent.toml").c_str(),
            nullptr);
    ::_exit(127);
  }
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/p.gif?site=bench&utm=x";
  for (int i = 0; i < 100 && test::http_get(port, "/p.gif").empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto out = test::run({"/usr/bin/wrk", "-t1", "-c" + std::to_string(connections),
                        "-d" + std::to_string(seconds) + "s", "--latency", url});
  Run r;
  r.rps = std::stod("0" + after(out.out, "Requests/sec:"));
  r.p50_ms = parse_ms(after(out.out, " 50%"));
  r.p99_ms = parse_ms(after(out.out, " 99%"));
  auto in = out.out.find(" requests in ");
  r.requests = std::stoull(out.out.substr(out.out.rfind('\n', in) + 1));
  r.requests += 1;  // the readiness probe above (at most one answered hit before wrk)
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
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Flags flags("pixel_bench", argc, argv,
                           {{"seconds", "10"}, {"connections", "50"}, {"runs", "3"}});
  const auto seconds = static_cast<int>(flags.number("seconds"));
  const auto connections = static_cast<int>(flags.number("connections"));
  const auto runs = static_cast<int>(flags.number("runs"));
  const std::string dir = std::filesystem::temp_directory_path().string() + "/outpost-pixel-bench";
  std::vector<double> rps, p50, p99, cpu, rss, buffered;
  bool all_buffered = true;
  for (int i = 0; i < runs; ++i) {
    Run r = one_run(dir, seconds, connections);
    all_buffered = all_buffered && r.buffered + 1 >= r.requests;
    std::printf(
        "run %d: %.0f req/s, p50 %.3f ms, p99 %.3f ms, agent %.2f cores, peak RSS %.1f MiB, "
        "%llu of %llu answered hits in the buffer\n",
        i + 1, r.rps, r.p50_ms, r.p99_ms, r.cpu_cores, r.rss_mib,
        static_cast<unsigned long long>(r.buffered), static_cast<unsigned long long>(r.requests));
    rps.push_back(r.rps);
    p50.push_back(r.p50_ms);
    p99.push_back(r.p99_ms);
    cpu.push_back(r.cpu_cores);
    rss.push_back(r.rss_mib);
    buffered.push_back(r.buffered_per_s);
  }
  std::filesystem::remove_all(dir);
  std::printf("wrk -t1 -c%d -d%ds, keep-alive, GET /p.gif; medians of %d runs\n", connections,
              seconds, runs);
  std::printf("requests/s: %.0f\n", median(rps));
  std::printf("latency: p50 %.3f ms, p99 %.3f ms\n", median(p50), median(p99));
  std::printf("agent: %.2f cores, peak RSS %.1f MiB\n", median(cpu), median(rss));
  std::printf("events/s into the buffer: %.0f; every answered hit in the buffer: %s\n",
              median(buffered), all_buffered ? "yes" : "NO");
  return all_buffered ? 0 : 1;
}
