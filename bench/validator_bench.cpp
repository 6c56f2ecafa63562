// validator_bench: the contract validator alone (proto/validator.hpp) on the generator's
// order.v1 JSON events and pixel events, single-threaded, and the gateway's stage work around
// it (provenance: SHA-256 of the payload and the event copied with its provenance). Prints
// checks per second and ns per event for each.
//
// Usage: validator_bench [--events N] [--runs R] [--only all|order|pixel|stamp]
// (default 1,000,000 events, 5 runs, all three)
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "agent/generator/synthetic_generator.hpp"
#include "bench/bench_support.hpp"
#include "common/tls/digest.hpp"
#include "proto/event_view.hpp"
#include "proto/validator.hpp"

using namespace outpost;

int main(int argc, char** argv) {
  const bench::Flags flags("validator_bench", argc, argv,
                           {{"events", "1000000"}, {"runs", "5"}, {"only", "all"}});
  const std::string only = flags.text("only");
  const auto n = static_cast<size_t>(flags.number("events"));
  const auto runs = static_cast<int>(flags.number("runs"));
  auto registry = proto::ContractRegistry::load(OUTPOST_DESCRIPTOR_SET);
  if (!registry) return 1;
  proto::ValidatorOptions o;
  o.hash_key = "a-benchmark-key";
  auto made = proto::Validator::make(*registry, o);
  if (!made) return 1;
  const proto::Validator& v = **made;
  std::vector<std::string> orders, pixels;
  for (size_t i = 0; i < 1000; ++i) {
    orders.push_back(agent::synthetic_event(i * 3 + 2, 1).body);
    pixels.push_back(agent::synthetic_event(i * 3, 1).body);
  }
  auto measure = [&](const std::vector<std::string>& events, const char* schema, int what) {
    std::vector<double> rates;
    for (int r = 0; r < runs; ++r) {
      size_t bad = 0;
      std::string out, scratch;
      const auto t0 = std::chrono::steady_clock::now();
      for (size_t i = 0; i < n; ++i) {
        const std::string& e = events[i % events.size()];
        if (what == 0) {
          bad += v.check(e, schema).bad.has_value();
        } else {
          const std::string_view payload = proto::payload_bytes(e, scratch, nullptr);
          const std::string digest = tls::sha256_hex(payload);
          proto::ProvenanceFields p;
          p.gateway_id = "gw-1";
          p.received_at = 1;
          p.payload_sha256 = digest;
          out.clear();
          proto::append_with_provenance(out, e, 0, {}, p);
        }
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (bad != 0) std::fprintf(stderr, "%zu bad events\n", bad);
      rates.push_back(static_cast<double>(n) / s);
    }
    return bench::median(rates);
  };
  const double order = only == "all" || only == "order" ? measure(orders, "order.v1", 0) : 0;
  const double pixel = only == "all" || only == "pixel" ? measure(pixels, "pixel.v1", 0) : 0;
  const double stamp = only == "all" || only == "stamp" ? measure(orders, "order.v1", 1) : 0;
  std::printf("events per run: %zu; medians of %d runs, one thread\n", n, runs);
  std::printf("validate order.v1 JSON: %.0f events/s (%.0f ns/event)\n", order, 1e9 / order);
  std::printf("validate pixel.v1: %.0f events/s (%.0f ns/event)\n", pixel, 1e9 / pixel);
  std::printf("provenance (sha256 + copy): %.0f events/s (%.0f ns/event)\n", stamp, 1e9 / stamp);
  return 0;
}
