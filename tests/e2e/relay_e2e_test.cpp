// The site tier end to end (issue 16; docs/install.md, "Site gateways"): three device agents
// send through one site agent in relay mode to the central gateway and a real Kafka broker,
// all real processes with real certificates. SIGKILLs of a device, of the site agent and of the
// gateway at random moments, and the site's uplink gone for 10 s (the gateway down): a
// read_committed consumer finds every (agent_id, seq) of every device exactly once, each with
// the relay in its provenance (the relay_id header).
#include <doctest/doctest.h>

#include <map>
#include <random>
#include <set>
#include <sstream>

#include "outpost/v1/event.pb.h"
#include "tests/e2e/uplink_support.hpp"
#include "tests/support/buffer_probe.hpp"
#include "tests/support/file_sink_reader.hpp"
#include "tests/support/kafka.hpp"

using namespace outpost;
using namespace outpost::test;

namespace {

constexpr int kDevices = 3;
constexpr uint64_t kEvents = 20'000;  // per device generator run

struct Seen {
  std::set<uint64_t> seqs;
  uint64_t duplicates = 0, not_relayed = 0;
};

std::map<std::string, Seen> read_all(const std::string& bootstrap) {
  std::string error;
  auto records =
      read_committed(bootstrap, {"outpost.pixel", "outpost.sensor", "outpost.events"}, &error);
  REQUIRE_MESSAGE(error.empty(), error);
  std::map<std::string, Seen> seen;
  for (const ConsumedRecord& r : records) {
    v1::Event e;
    REQUIRE(e.ParseFromString(r.value));
    Seen& s = seen[e.agent_id()];
    if (!s.seqs.insert(e.seq()).second) ++s.duplicates;
    auto relay = r.headers.find("relay_id");
    if (relay == r.headers.end() || relay->second != "relay-north") ++s.not_relayed;
  }
  return seen;
}

}  // namespace

TEST_CASE("3 devices -> site agent -> gateway -> Kafka through SIGKILLs of each and an outage") {
  KafkaBroker broker(free_port());
  REQUIRE_MESSAGE(broker.ok(), broker.error());
  Pki pki;
  const std::string script = std::string(OUTPOST_SOURCE_DIR) + "/deploy/certs/make-certs";
  REQUIRE(run({script, pki.main, "--site", "north", "--site-devices", std::to_string(kDevices)})
              .exit_code == 0);
  TempDir gw_dir, site_dir;
  const uint16_t gateway_port = free_port(), relay_port = free_port();
  GatewayProc gateway(pki, gw_dir.path(), gateway_port,
                      "[sink]\ntype = \"kafka\"\n[sink.kafka]\nbrokers = \"" + broker.bootstrap() +
                          "\"\ntransactional_id = \"gw-relay\"\ncreate_topics = true\n"
                          "partitions = 2\ntransaction_timeout = \"10s\"\n");
  gateway.start();
  AgentProc site(pki, site_dir.path(), gateway_port);
  site.set_extra("[relay]\nenabled = true\nlisten = \"127.0.0.1:" + std::to_string(relay_port) +
                 "\"\n");
  site.start({.device = "relay-north"});
  std::vector<std::unique_ptr<TempDir>> dirs;
  std::vector<std::unique_ptr<AgentProc>> devices;
  std::vector<AgentSetup> setups;
  for (int i = 1; i <= kDevices; ++i) {
    dirs.push_back(std::make_unique<TempDir>());
    devices.push_back(std::make_unique<AgentProc>(pki, dirs.back()->path(), relay_port));
    setups.push_back(
        {.device = "north-device-" + std::to_string(i), .events = kEvents, .rate = 2'000});
    devices.back()->start(setups.back());
  }

  const uint64_t seed = std::random_device{}();
  MESSAGE("kill schedule seed " << seed);
  std::mt19937_64 rng(seed);
  std::vector<char> victims = {'d', 'd', 'd', 's', 's', 's', 'g', 'g', 'g', 'o'};
  std::shuffle(victims.begin(), victims.end(), rng);
  for (char victim : victims) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500 + rng() % 1500));
    if (victim == 'd') {
      const size_t i = rng() % kDevices;
      devices[i]->kill9();
      devices[i]->start(setups[i]);  // its generator starts over: more events, new seqs
    } else if (victim == 's') {
      site.kill9();
      std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 400));
      site.start({.device = "relay-north"});
    } else if (victim == 'g') {
      gateway.kill9();
      std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 400));
      gateway.start();
    } else {  // the site offline: its uplink has nowhere to go for 10 s
      gateway.kill9();
      std::this_thread::sleep_for(std::chrono::seconds(10));
      gateway.start();
    }
  }
  // Every device's last generator run finishes and everything drains through the site.
  auto drained = [&] {
    for (auto& d : devices) {
      if (!generator_finished(d->log()) || pending(d->buffer_path()) != 0) return false;
    }
    return pending(site.buffer_path()) == 0;
  };
  REQUIRE_MESSAGE(wait_until(drained, 300), site.log());
  const std::string metrics = http_get(gateway.http_port(), "/metrics");
  // Counted since the gateway's last restart, which may come after some devices were done
  // (relay_gateway_test checks the exact count on a gateway that stays up).
  CHECK(metric(metrics, "outpost_gateway_relayed_devices_total") >= 1);
  for (auto& d : devices) d->stop();
  site.stop();
  CHECK(gateway.stop() == 0);

  // Exactly once, read_committed; a gateway killed inside a transaction holds the reader back
  // until the broker aborts it (10 s), so the count is taken again until complete.
  std::map<std::string, Seen> seen;
  std::map<std::string, uint64_t> last;
  for (int i = 0; i < kDevices; ++i)
    last[setups[i].device] = next_seq(devices[i]->buffer_path()) - 1;
  uint64_t lost = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  do {
    if (lost > 0) std::this_thread::sleep_for(std::chrono::seconds(2));
    seen = read_all(broker.bootstrap());
    lost = 0;
    for (const auto& [device, n] : last) {
      for (uint64_t s = 1; s <= n; ++s) lost += seen[device].seqs.count(s) == 0;
    }
  } while (lost > 0 && std::chrono::steady_clock::now() < deadline);
  for (const auto& [device, n] : last) {
    const Seen& s = seen[device];
    MESSAGE(device << ": seqs 1.." << n << ", " << s.seqs.size() << " distinct, " << s.duplicates
                   << " duplicated, " << s.not_relayed << " without the relay");
    std::string missing;
    for (uint64_t q = 1; q <= n && missing.size() < 200; ++q) {
      if (!s.seqs.count(q)) missing += std::to_string(q) + " ";
    }
    if (!missing.empty()) MESSAGE(device << " misses " << missing);
    CHECK(n >= kEvents);
    CHECK(s.seqs.size() == n);  // none lost, none beyond what the device made
    CHECK(s.duplicates == 0);
    CHECK(s.not_relayed == 0);  // each names the relay it came through
  }
  CHECK(lost == 0);
  if (lost > 0) {  // what the logs say about gaps, to find where
    for (const std::string& log : {gateway.log(), site.log()}) {
      std::istringstream lines(log);
      for (std::string line; std::getline(lines, line);) {
        if (line.find("gap") != std::string::npos || line.find("lost") != std::string::npos) {
          MESSAGE(line);
        }
      }
    }
    for (auto& d : devices) MESSAGE(d->log().substr(0, 4000));
  }
  CHECK(seen.size() == kDevices);  // nothing under any other identity
}

TEST_CASE("the site agent admits only its site's devices, and stores their events as theirs") {
  Pki pki;
  const std::string script = std::string(OUTPOST_SOURCE_DIR) + "/deploy/certs/make-certs";
  for (const char* s : {"north", "south"}) {
    REQUIRE(run({script, pki.main, "--site", s, "--site-devices", "1"}).exit_code == 0);
  }
  TempDir gw_dir, site_dir, north_dir, south_dir;
  const uint16_t gateway_port = free_port(), relay_port = free_port();
  GatewayProc gateway(pki, gw_dir.path(), gateway_port);  // started later: the site offline
  AgentProc site(pki, site_dir.path(), gateway_port);
  site.set_extra("[relay]\nenabled = true\nlisten = \"127.0.0.1:" + std::to_string(relay_port) +
                 "\"\n");
  site.start({.device = "relay-north", .events = 500, .rate = 100'000});  // its own events too
  AgentProc north(pki, north_dir.path(), relay_port), south(pki, south_dir.path(), relay_port);
  north.start({.device = "north-device-1", .events = 1000, .rate = 100'000});
  south.start({.device = "south-device-1", .events = 1000, .rate = 100'000});
  // While the site is offline its buffer holds the device's events and its own, by origin.
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        return generator_finished(north.log()) &&
                               pending(north.buffer_path()) == 0 && generator_finished(site.log());
                      },
                      60),
                  site.log());
  auto stats = run({OUTPOST_AGENT_BIN, "buffer", "stats", "--json", "--path", site.buffer_path()});
  REQUIRE(stats.exit_code == 0);
  CHECK_MESSAGE(stats.out.find("\"origins\":[{\"agent_id\":\"north-device-1\",\"events\":1000,") !=
                    std::string::npos,
                stats.out);
  CHECK(stats.out.find("{\"agent_id\":\"relay-north\",\"events\":500,") != std::string::npos);
  gateway.start();
  REQUIRE_MESSAGE(wait_until([&] { return pending(site.buffer_path()) == 0; }, 60), site.log());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(pending(south.buffer_path()) == 1000);  // refused at the door: it keeps its events
  north.stop();
  south.stop();
  site.stop();
  CHECK(gateway.stop() == 0);
  CHECK(site.log().find("refused peer=127.0.0.1 subject=\"CN=south-device-1\"") !=
        std::string::npos);
  CHECK(site.log().find("not a device of site north") != std::string::npos);
  check_file_sink_exactly_once_of(gateway.sink_dir(), {{"north-device-1", 1000}});
  // The site's own 500, once each, under its own id (its seqs skip those its devices' events
  // took in its buffer), and nothing of the refused device.
  std::set<uint64_t> own;
  uint64_t twice = 0, south_lines = 0;
  for (const SinkLine& l : read_sink(gateway.sink_dir())) {
    if (l.agent_id == "relay-north" && !own.insert(l.seq).second) ++twice;
    if (l.agent_id == "south-device-1") ++south_lines;
    if (l.agent_id == "north-device-1") CHECK(json_field(l.json, "relay_id") == "relay-north");
  }
  CHECK(own.size() == 500);
  CHECK(twice == 0);
  CHECK(south_lines == 0);
}
