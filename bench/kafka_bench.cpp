// kafka_bench: the gateway's Kafka sink into a real local broker (tests/kafka/broker: a
// single-node Apache Kafka 3.9 in KRaft mode on loopback), with and without transactions,
// against a plain librdkafka producer sending the same records in the same run, on the same
// broker (the reference limit).
//
// Each run writes N events of about 200 bytes (serialized outpost.v1.Event) from 10 agents, in
// batches of 1000 with up to 64 batches in flight (as many agents' sessions would), through
// KafkaSink::write() until every callback has run: with transactions (the default: several
// batches per transaction) and with `transactions = false`. The reference produces the same
// values, keys and headers with an idempotent producer (acks=all, zstd, linger 5 ms) and
// flushes. Each writes to topics of its own.
//
// Usage: kafka_bench [--events N] [--runs R]   (defaults 500000, 3)
// Needs Java 17 and the broker's jars (tests/kafka/broker fetch). The last lines are the
// figures (medians).
#include <librdkafka/rdkafka.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "bench/bench_support.hpp"
#include "gateway/sinks/kafka_sink.hpp"
#include "outpost/v1/event.pb.h"
#include "tests/e2e/uplink_support.hpp"
#include "tests/support/kafka.hpp"

using namespace outpost;
using bench::median;
using Steady = std::chrono::steady_clock;

namespace {

constexpr int kAgents = 10;
constexpr uint64_t kBatch = 1000;

v1::Event make_event(const std::string& agent, uint64_t seq) {
  v1::Event e;
  e.set_agent_id(agent);
  e.set_seq(seq);
  e.set_kind(v1::EVENT_KIND_JSON);
  e.set_schema("bench.v1");
  e.set_event_time(1'790'000'000'000'000'000 + static_cast<int64_t>(seq));
  e.set_collected_at(1'790'000'000'000'000'000 + static_cast<int64_t>(seq));
  std::string json = R"({"page":"/products/)" + std::to_string(seq % 977) + R"(","user":"u-)" +
                     std::to_string(seq % 10007) + R"(","pad":")";
  json.resize(140, 'x');
  json += "\"}";
  e.set_json(json);
  return e;
}

struct Figures {
  double events_per_s = 0, mb_per_s = 0;
};

Figures run_sink(const std::string& bootstrap, uint64_t events, bool transactions,
                 const std::string& prefix) {
  gateway::KafkaSinkOptions o;
  o.brokers = bootstrap;
  o.topics = {prefix + ".pixel", prefix + ".sensor", prefix + ".events"};
  o.offsets_topic = prefix + ".offsets";
  o.transactional_id = prefix;
  o.transactions = transactions;
  o.create_topics = true;
  o.partitions = 6;
  SystemClock clock;
  auto sink = gateway::KafkaSink::start(o, clock);
  if (!sink) {
    std::fprintf(stderr, "kafka_bench: %s\n", sink.error().describe().c_str());
    std::exit(1);
  }
  for (int i = 0; i < 600 && (*sink)->not_ready_reason(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // The batches, made before the clock starts.
  std::vector<gateway::SinkBatch> batches;
  uint64_t value_bytes = 0;
  std::vector<uint64_t> next(kAgents, 1);
  for (uint64_t made = 0; made < events; made += kBatch) {
    const int a = static_cast<int>((made / kBatch) % kAgents);
    gateway::SinkBatch b;
    b.agent_id = "agent-" + std::to_string(a);
    b.first_seq = next[a];
    for (uint64_t i = 0; i < kBatch; ++i) {
      b.events.push_back(make_event(b.agent_id, next[a]++).SerializeAsString());
      value_bytes += b.events.back().bytes.size();
    }
    b.last_seq = next[a] - 1;
    batches.push_back(std::move(b));
  }
  std::mutex mu;
  std::condition_variable cv;
  size_t in_flight = 0, failed = 0;
  const auto t0 = Steady::now();
  for (gateway::SinkBatch& b : batches) {
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return in_flight < 64; });
      ++in_flight;
    }
    (*sink)->write(std::move(b), [&](const Result<gateway::SinkResult>& r) {
      std::lock_guard lock(mu);
      --in_flight;
      failed += r ? 0 : 1;
      cv.notify_all();
    });
  }
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return in_flight == 0; });
  }
  const double s = std::chrono::duration<double>(Steady::now() - t0).count();
  if (failed > 0) std::fprintf(stderr, "kafka_bench: %zu batches failed\n", failed);
  return {static_cast<double>(events) / s, static_cast<double>(value_bytes) / s / 1e6};
}

Figures run_reference(test::KafkaBroker& broker, uint64_t events, const std::string& topic) {
  broker.create_topic(topic, 6);
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  const std::pair<const char*, std::string> settings[] = {
      {"bootstrap.servers", broker.bootstrap()},
      {"enable.idempotence", "true"},
      {"acks", "all"},
      {"compression.type", "zstd"},
      {"linger.ms", "5"},
  };
  for (const auto& [k, v] : settings) rd_kafka_conf_set(conf, k, v.c_str(), err, sizeof err);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  std::vector<std::pair<std::string, std::string>> records;  // key, value
  uint64_t value_bytes = 0;
  for (uint64_t i = 0; i < events; ++i) {
    const std::string agent = "agent-" + std::to_string((i / kBatch) % kAgents);
    records.emplace_back(agent, make_event(agent, i + 1).SerializeAsString());
    value_bytes += records.back().second.size();
  }
  const auto t0 = Steady::now();
  uint64_t seq = 0;
  for (const auto& [key, value] : records) {
    const std::string s = std::to_string(++seq);
    rd_kafka_headers_t* h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "agent_id", -1, key.data(), key.size());
    rd_kafka_header_add(h, "seq", -1, s.data(), s.size());
    rd_kafka_header_add(h, "schema", -1, "bench.v1", 8);
    rd_kafka_header_add(h, "collected_at", -1, s.data(), s.size());
    while (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()),
                             RD_KAFKA_V_KEY(key.data(), key.size()),
                             RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
                             RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      rd_kafka_poll(rk, 10);
    }
  }
  rd_kafka_flush(rk, 120'000);
  const double s = std::chrono::duration<double>(Steady::now() - t0).count();
  rd_kafka_destroy(rk);
  return {static_cast<double>(events) / s, static_cast<double>(value_bytes) / s / 1e6};
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Flags flags("kafka_bench", argc, argv, {{"events", "500000"}, {"runs", "3"}});
  const auto events = static_cast<uint64_t>(flags.number("events"));
  const auto runs = static_cast<int>(flags.number("runs"));
  test::KafkaBroker broker(test::free_port());
  if (!broker.ok()) {
    std::fprintf(stderr, "kafka_bench: the broker did not start: %s\n", broker.error().c_str());
    return 1;
  }
  std::vector<double> ref, tx, plain, ref_mb, tx_mb, plain_mb;
  for (int i = 0; i < runs; ++i) {
    const std::string n = std::to_string(i);
    Figures r = run_reference(broker, events, "ref-" + n);
    Figures t = run_sink(broker.bootstrap(), events, true, "tx-" + n);
    Figures p = run_sink(broker.bootstrap(), events, false, "plain-" + n);
    std::printf(
        "run %d: reference %.0f ev/s (%.1f MB/s); sink with transactions %.0f ev/s (%.1f "
        "MB/s); without %.0f ev/s (%.1f MB/s)\n",
        i + 1, r.events_per_s, r.mb_per_s, t.events_per_s, t.mb_per_s, p.events_per_s, p.mb_per_s);
    std::fflush(stdout);
    ref.push_back(r.events_per_s);
    tx.push_back(t.events_per_s);
    plain.push_back(p.events_per_s);
    ref_mb.push_back(r.mb_per_s);
    tx_mb.push_back(t.mb_per_s);
    plain_mb.push_back(p.mb_per_s);
  }
  std::printf("%llu events of ~200 bytes per run, 10 agents, batches of 1000; medians of %d runs\n",
              static_cast<unsigned long long>(events), runs);
  std::printf("reference plain producer: %.0f events/s, %.1f MB/s\n", median(ref), median(ref_mb));
  std::printf("sink with transactions: %.0f events/s, %.1f MB/s, %.1f %% of the reference\n",
              median(tx), median(tx_mb), 100 * median(tx) / median(ref));
  std::printf("sink without transactions: %.0f events/s, %.1f MB/s, %.1f %% of the reference\n",
              median(plain), median(plain_mb), 100 * median(plain) / median(ref));
  return 0;
}
