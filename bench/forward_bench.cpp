// forward_bench: drains an agent's buffer backlog to a gateway over mutual TLS on loopback —
// real outpost-agent and outpost-gateway processes, the file sink on disk — and prints
// events/s end to end, compressed bytes per event, compression ratio, CPU seconds per
// million events and peak RSS of each process.
//
// Usage: forward_bench [--events N] [--runs R] [--dir DIR] [--sink-format ndjson|protobuf]
//                      [--payloads mixed|json] [--contracts off|on|ab]
//                      [--encryption off|on|ab]
// (default 1,000,000 events, 3 runs, the generator's mix of pixel, sensor and order.v1 JSON
// events, no contracts). --payloads json: every event an order.v1 JSON payload. --contracts
// ab: each run twice, the gateway without and with payload validation against the build's
// descriptor set, to compare the rates in the same run (docs/BENCHMARKS.md). --encryption ab:
// each run twice, the agent's buffer in clear and sealed (ChaCha20-Poly1305; docs/buffer.md,
// "Encryption at rest"); not together with --contracts ab.
// Each figure is the median over the runs; the last lines are the figures.
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "bench/backlog.hpp"
#include "bench/bench_support.hpp"
#include "tests/e2e/uplink_support.hpp"

using namespace outpost;
using bench::median;
using bench::ProcStats;
using bench::spawn;
using bench::stop_and_measure;
namespace fs = std::filesystem;

namespace {

struct Run {
  double events_per_s = 0;
  double bytes_per_event = 0;
  double ratio = 0;
  double stage_us = 0;  // the gateway's validation stage (checks and provenance), per event
  ProcStats agent, gateway;
};

Run one_run(const std::string& dir, const std::string& pki, uint64_t events,
            const std::string& sink_format, bool json_only, bool contracts, bool sealed) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string buffer = dir + "/buffer.db";
  const std::string key = dir + "/buffer.key";
  agent::BufferEncryption encryption;
  if (sealed) {
    test::write_file(key, std::string(32, 'k'));
    encryption = {true, tls::AeadCipher::chacha20_poly1305, {*tls::AeadKey::read_file(key)}};
  }
  bench::fill_backlog(buffer, "device-1", events, json_only, encryption);
  const uint16_t port = test::free_port();
  test::write_file(
      dir + "/gateway.toml",
      "[gateway]\nlisten = \"127.0.0.1:" + std::to_string(port) +
          "\"\nhttp_listen = \"127.0.0.1:0\"\n[tls]\nca_file = \"" + pki +
          "/ca.crt\"\ncert_file = \"" + pki + "/gateway.crt\"\nkey_file = \"" + pki +
          "/gateway.key\"\n[sink.file]\ndir = \"" + dir + "/sink\"\nformat = \"" + sink_format +
          "\"\n" +
          (contracts ? "[contracts]\ndescriptor_set = \"" + std::string(OUTPOST_DESCRIPTOR_SET) +
                           "\"\nhash_key_file = \"" + dir + "/hash.key\"\n"
                     : ""));
  test::write_file(dir + "/hash.key", "a-benchmark-key-of-32-bytes-long");
  pid_t gw = spawn(
      std::string(OUTPOST_GATEWAY_BIN) + " -c " + dir + "/gateway.toml 2>" + dir + "/gateway.log",
      dir + "/gateway.out");
  uint16_t http_port = 0;
  for (int i = 0; i < 100 && http_port == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::string out = test::read_text(dir + "/gateway.out");
    auto at = out.find("http_port=");
    if (at != std::string::npos && out.find('\n', at) != std::string::npos) {
      http_port = static_cast<uint16_t>(std::stoi(out.substr(at + 10)));
    }
  }
  if (http_port == 0) {
    std::fprintf(stderr, "gateway did not start:\n%s",
                 test::read_text(dir + "/gateway.log").c_str());
    std::exit(1);
  }
  test::write_file(dir + "/agent.toml",
                   "[agent]\nid = \"device-1\"\n[buffer]\npath = \"" + buffer + "\"\n" +
                       (sealed ? "encryption = \"aead\"\nkey_file = \"" + key + "\"\n" : "") +
                       "[uplink]\nendpoints = \"127.0.0.1:" + std::to_string(port) +
                       "\"\nserver_name = \"localhost\"\nca_file = \"" + pki +
                       "/ca.crt\"\ncert_file = \"" + pki + "/device-1.crt\"\nkey_file = \"" + pki +
                       "/device-1.key\"\n");
  const auto t0 = std::chrono::steady_clock::now();
  pid_t ag = spawn(std::string(OUTPOST_AGENT_BIN) + " run --config " + dir + "/agent.toml 2>" +
                       dir + "/agent.log",
                   "/dev/null");
  // Done when the gateway has written every event (a cheap HTTP poll: scanning the buffer
  // from here would take CPU from the two processes measured).
  auto done = [&](const std::string& m) {  // good and bad together
    return test::metric(m, "outpost_gateway_events_total{result=\"written\"}") +
           test::metric(m, "outpost_gateway_events_total{result=\"dead_letter\"}");
  };
  while (done(test::http_get(http_port, "/metrics")) < static_cast<double>(events)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string m = test::http_get(http_port, "/metrics");
  Run r;
  r.events_per_s = static_cast<double>(events) / seconds;
  const double compressed = test::metric(m, "outpost_gateway_bytes_total{form=\"compressed\"}");
  const double raw = test::metric(m, "outpost_gateway_bytes_total{form=\"raw\"}");
  r.bytes_per_event = compressed / static_cast<double>(events);
  r.ratio = compressed > 0 ? raw / compressed : 0;
  r.stage_us =
      test::metric(m, "outpost_gateway_validation_seconds_sum") * 1e6 / static_cast<double>(events);
  r.agent = stop_and_measure(ag);
  r.gateway = stop_and_measure(gw);
  const double written = test::metric(m, "outpost_gateway_events_total{result=\"written\"}");
  if (written != static_cast<double>(events)) {  // the synthetic events are all good
    std::fprintf(stderr, "the gateway wrote %.0f of %llu events\n", written,
                 static_cast<unsigned long long>(events));
    std::exit(1);
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Flags flags("forward_bench", argc, argv,
                           {{"events", "1000000"},
                            {"runs", "3"},
                            {"dir", fs::temp_directory_path().string()},
                            {"sink-format", "ndjson"},
                            {"payloads", "mixed"},
                            {"contracts", "off"},
                            {"encryption", "off"}});
  const auto events = static_cast<uint64_t>(flags.number("events"));
  const auto runs = static_cast<int>(flags.number("runs"));
  const std::string base = flags.text("dir");
  const std::string mode = flags.text("contracts");
  const bool json_only = flags.text("payloads") == "json";
  const std::string pki = base + "/outpost-forward-bench-pki";
  const std::string make = std::string(OUTPOST_SOURCE_DIR) + "/deploy/certs/make-certs " + pki +
                           " --devices 1 >/dev/null";
  if (std::system(make.c_str()) != 0) return 1;
  const std::string sealing = flags.text("encryption");
  if (mode == "ab" && sealing == "ab") {
    std::fprintf(stderr, "forward_bench: --contracts ab and --encryption ab: one at a time\n");
    return 2;
  }
  using Arm = std::pair<bool, bool>;  // validation, a sealed buffer
  std::vector<Arm> arms;              // per run
  for (bool contracts : {false, true}) {
    if ((contracts && mode == "off") || (!contracts && mode == "on")) continue;
    for (bool sealed : {false, true}) {
      if ((sealed && sealing == "off") || (!sealed && sealing == "on")) continue;
      arms.emplace_back(contracts, sealed);
    }
  }
  auto label = [](const Arm& a) {
    return std::string(a.first ? "validation on" : "validation off") +
           (a.second ? ", buffer sealed" : "");
  };
  std::map<Arm, std::vector<double>> rate, bpe, ratio, agent_cpu, gw_cpu, agent_rss, gw_rss, stage;
  for (int r = 0; r < runs; ++r) {
    for (const Arm& arm : arms) {
      const auto [contracts, sealed] = arm;
      Run run = one_run(base + "/outpost-forward-bench", pki, events, flags.text("sink-format"),
                        json_only, contracts, sealed);
      const double millions = static_cast<double>(events) / 1e6;
      std::printf(
          "run %d (%s): %.0f events/s, %.1f bytes/event, ratio %.2f, CPU s per 1M events agent "
          "%.2f gateway %.2f (its validation stage %.2f), peak RSS agent %.1f MiB gateway %.1f "
          "MiB\n",
          r + 1, label(arm).c_str(), run.events_per_s, run.bytes_per_event, run.ratio,
          run.agent.cpu_seconds / millions, run.gateway.cpu_seconds / millions, run.stage_us,
          run.agent.peak_rss_mib, run.gateway.peak_rss_mib);
      stage[arm].push_back(run.stage_us);
      rate[arm].push_back(run.events_per_s);
      bpe[arm].push_back(run.bytes_per_event);
      ratio[arm].push_back(run.ratio);
      agent_cpu[arm].push_back(run.agent.cpu_seconds / millions);
      gw_cpu[arm].push_back(run.gateway.cpu_seconds / millions);
      agent_rss[arm].push_back(run.agent.peak_rss_mib);
      gw_rss[arm].push_back(run.gateway.peak_rss_mib);
    }
  }
  fs::remove_all(base + "/outpost-forward-bench");
  fs::remove_all(pki);
  std::printf("events per run: %llu synthetic events (%s); medians of %d runs\n",
              static_cast<unsigned long long>(events),
              json_only ? "all order.v1 JSON" : "pixel, sensor and order.v1 JSON", runs);
  for (const Arm& a : arms) {
    const std::string text = label(a);
    const char* arm = text.c_str();
    std::printf("end to end (agent buffer -> TLS -> gateway -> file sink, %s, %s): %.0f events/s\n",
                flags.text("sink-format").c_str(), arm, median(rate[a]));
    std::printf("compressed bytes per event (%s): %.1f (zstd level 1, ratio %.2f)\n", arm,
                median(bpe[a]), median(ratio[a]));
    std::printf(
        "CPU seconds per million events (%s): agent %.2f, gateway %.2f (its validation stage "
        "%.2f)\n",
        arm, median(agent_cpu[a]), median(gw_cpu[a]), median(stage[a]));
    std::printf("peak RSS (%s): agent %.1f MiB, gateway %.1f MiB\n", arm, median(agent_rss[a]),
                median(gw_rss[a]));
  }
  if (arms.size() == 2 && mode == "ab") {
    std::printf("validation on keeps %.1f %% of the rate with validation off (medians)\n",
                100.0 * median(rate[arms[1]]) / median(rate[arms[0]]));
  }
  if (arms.size() == 2 && sealing == "ab") {
    std::printf("a sealed buffer keeps %.1f %% of the rate in clear (medians)\n",
                100.0 * median(rate[arms[1]]) / median(rate[arms[0]]));
  }
  return 0;
}
