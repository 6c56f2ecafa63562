// relay_bench: a device's backlog drained to the gateway through a site agent in relay mode,
// against straight to the gateway, in the same run — real outpost-agent and outpost-gateway
// processes over mutual TLS on loopback, the file sink on disk (docs/install.md, "Site
// gateways").
//
//   direct   the device's agent sends its backlog of --events to the gateway
//   relayed  the same backlog: device agent -> site agent ([relay], committing each batch
//            in its own buffer, synchronous=FULL) -> gateway
//
// Each is timed from the device agent's start until the gateway has written every event
// (its /metrics). events/s; relayed as a share of direct; CPU per event of all the processes
// together (and of the site agent); peak RSS of the site agent. Medians
// of --runs runs (default 3), the two modes alternating. The last lines are the figures.
// Usage: relay_bench [--events N] [--runs R] [--dir DIR]
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "bench/backlog.hpp"
#include "bench/bench_support.hpp"
#include "tests/e2e/uplink_support.hpp"

using namespace outpost;
using bench::median;
using bench::spawn;
namespace fs = std::filesystem;

namespace {

constexpr const char* kDevice = "bench-device-1";

uint16_t http_port_of(const std::string& out, const std::string& log) {
  for (int i = 0; i < 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const std::string text = test::read_text(out);
    auto at = text.find("http_port=");
    if (at != std::string::npos && text.find('\n', at) != std::string::npos) {
      return static_cast<uint16_t>(std::stoi(text.substr(at + 10)));
    }
  }
  std::fprintf(stderr, "gateway did not start:\n%s", test::read_text(log).c_str());
  std::exit(1);
}

std::string uplink(const std::string& pki, uint16_t port, const std::string& name) {
  return "[uplink]\nendpoints = \"127.0.0.1:" + std::to_string(port) +
         "\"\nserver_name = \"localhost\"\nca_file = \"" + pki + "/ca.crt\"\ncert_file = \"" + pki +
         "/" + name + ".crt\"\nkey_file = \"" + pki + "/" + name + ".key\"\n";
}

struct Run {
  double events_per_s = 0;
  double site_rss_mib = 0;
  double cpu_us_per_event = 0;  // all the processes together (device, site, gateway)
  double site_cpu_us_per_event = 0;
};

Run one_run(const std::string& dir, const std::string& pki, uint64_t events, bool relayed) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  bench::fill_backlog(dir + "/device.db", kDevice, events);
  const uint16_t port = test::free_port(), relay_port = test::free_port();
  test::write_file(dir + "/gateway.toml",
                   "[gateway]\nlisten = \"127.0.0.1:" + std::to_string(port) +
                       "\"\nhttp_listen = \"127.0.0.1:0\"\n[tls]\nca_file = \"" + pki +
                       "/ca.crt\"\ncert_file = \"" + pki + "/gateway.crt\"\nkey_file = \"" + pki +
                       "/gateway.key\"\n[sink.file]\ndir = \"" + dir + "/sink\"\n");
  pid_t gw = spawn(
      std::string(OUTPOST_GATEWAY_BIN) + " -c " + dir + "/gateway.toml 2>" + dir + "/gateway.log",
      dir + "/gateway.out");
  const uint16_t http = http_port_of(dir + "/gateway.out", dir + "/gateway.log");
  pid_t site = -1;
  if (relayed) {
    test::write_file(
        dir + "/site.toml",
        "[agent]\nid = \"relay-bench\"\nhttp_listen = \"\"\n[buffer]\npath = \"" + dir +
            "/site.db\"\nmax_bytes = \"64GiB\"\n" + uplink(pki, port, "relay-bench") +
            "[relay]\nenabled = true\nlisten = \"127.0.0.1:" + std::to_string(relay_port) + "\"\n");
    site = spawn(std::string(OUTPOST_AGENT_BIN) + " run --config " + dir + "/site.toml 2>" + dir +
                     "/site.log",
                 "/dev/null");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // listening
  }
  test::write_file(dir + "/device.toml", "[agent]\nid = \"" + std::string(kDevice) +
                                             "\"\nhttp_listen = \"\"\n" + "[buffer]\npath = \"" +
                                             dir + "/device.db\"\n" +
                                             uplink(pki, relayed ? relay_port : port, kDevice));
  const auto t0 = std::chrono::steady_clock::now();
  pid_t device = spawn(std::string(OUTPOST_AGENT_BIN) + " run --config " + dir + "/device.toml 2>" +
                           dir + "/device.log",
                       "/dev/null");
  while (test::metric(test::http_get(http, "/metrics"),
                      "outpost_gateway_events_total{result=\"written\"}") <
         static_cast<double>(events)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Run r;
  r.events_per_s = static_cast<double>(events) /
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double cpu = bench::stop_and_measure(device).cpu_seconds;
  if (site > 0) {
    const bench::ProcStats s = bench::stop_and_measure(site);
    r.site_rss_mib = s.peak_rss_mib;
    r.site_cpu_us_per_event = s.cpu_seconds * 1e6 / static_cast<double>(events);
    cpu += s.cpu_seconds;
  }
  cpu += bench::stop_and_measure(gw).cpu_seconds;
  r.cpu_us_per_event = cpu * 1e6 / static_cast<double>(events);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags(
      "relay_bench", argc, argv,
      {{"events", "500000"}, {"runs", "3"}, {"dir", "/var/tmp/outpost-relay-bench"}});
  const uint64_t events = static_cast<uint64_t>(flags.number("events"));
  const int runs = static_cast<int>(flags.number("runs"));
  const std::string dir = flags.text("dir");
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string pki = dir + "/pki";
  const std::string script = std::string(OUTPOST_SOURCE_DIR) + "/deploy/certs/make-certs";
  if (test::run({script, pki, "--site", "bench", "--site-devices", "1"}).exit_code != 0) return 1;
  std::vector<double> direct, relayed, ratio, rss, cpu_direct, cpu_relayed, cpu_site;
  for (int i = 0; i < runs; ++i) {
    const Run d = one_run(dir + "/run", pki, events, false);
    const Run r = one_run(dir + "/run", pki, events, true);
    direct.push_back(d.events_per_s);
    relayed.push_back(r.events_per_s);
    ratio.push_back(r.events_per_s / d.events_per_s);
    rss.push_back(r.site_rss_mib);
    cpu_direct.push_back(d.cpu_us_per_event);
    cpu_relayed.push_back(r.cpu_us_per_event);
    cpu_site.push_back(r.site_cpu_us_per_event);
    std::printf(
        "run %d: direct %.0f events/s, relayed %.0f events/s (%.1f %%), site RSS %.1f MiB\n", i + 1,
        d.events_per_s, r.events_per_s, 100 * ratio.back(), rss.back());
  }
  fs::remove_all(dir);
  std::printf("events per run: %llu (the generator's mix)\n",
              static_cast<unsigned long long>(events));
  std::printf("direct: %.0f events/s (median of %d)\n", median(direct), runs);
  std::printf("relayed: %.0f events/s = %.1f %% of direct (median of the per-run shares)\n",
              median(relayed), 100 * median(ratio));
  std::printf("CPU per event, all processes: direct %.2f us, relayed %.2f us (the site %.2f us)\n",
              median(cpu_direct), median(cpu_relayed), median(cpu_site));
  std::printf("site agent peak RSS: %.1f MiB\n", median(rss));
  return 0;
}
