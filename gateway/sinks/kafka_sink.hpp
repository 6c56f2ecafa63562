#pragma once
// The Kafka sink: events into any Kafka-API cluster, exactly once (docs/gateway.md, "Kafka
// sink").
//
// One transactional producer (librdkafka, idempotent, acks=all, zstd). A transaction holds a
// group of batches: their events (topic by kind, key = the device identity, headers agent_id,
// seq, schema, collected_at; the value is the protobuf Event, or JSON per kind) and, for each
// agent in the group, its new high-water mark as a record in the compacted offsets topic
// (key = agent id, value = the seq in decimal). Only when the transaction commits do the
// batches' callbacks report success, so the gateway acks an agent only for events that a
// read_committed consumer can see. A failed or timed-out transaction is aborted and its
// batches fail (the agent is told retry-later and sends them again).
//
// Dedupe across restarts and gateways: the high-water marks are read back from the offsets
// topic (read_committed) at start, whenever a device's session begins on this gateway, and
// whenever a batch does not start right after the mark this gateway knows. Events at or
// below the mark are not written again; a batch starting above mark + 1 is refused (a gap).
//
// Kafka down: the sink keeps trying to start (init_transactions, reading the marks) with
// backoff; until it has, not_ready_reason() says why and write() fails at once. A fatal
// producer error (librdkafka 2.0 has spurious ones, DESIGN.md) rebuilds the producer; the
// transaction in flight is lost to Kafka (aborted by the broker when the new producer with
// the same transactional.id starts) and its batches fail, so nothing is written twice.
//
// Thread-safety: see Sink. One thread owns the producer; the destructor finishes queued
// batches (or fails them) before it returns.

#include <array>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.hpp"
#include "common/event.hpp"
#include "gateway/sinks/sink.hpp"

namespace outpost::gateway {

struct KafkaSinkOptions {
  std::string brokers = "127.0.0.1:9092";  // bootstrap.servers
  std::array<std::string, kKindCount> topics{"outpost.pixel", "outpost.sensor",
                                             "outpost.events"};  // by kind_index()
  std::array<bool, kKindCount> json_values{};  // per kind: JSON instead of protobuf values
  // Bad events (the validation stage's dead letters), in the same transaction as the rest.
  std::string dead_letter_topic = "outpost.bad";
  std::string offsets_topic = "outpost.agent-offsets";
  std::string transactional_id;  // stable and unique per gateway; default outpost-<gateway_id>
  // false: no transactions, an idempotent producer whose batches succeed on delivery reports:
  // at least once (a failed group may be written again), for clusters without transactions.
  bool transactions = true;
  bool create_topics = false;  // create missing topics at start (admin API)
  int partitions = 6;
  int replication = 1;
  size_t max_batches_per_transaction = 64;
  int64_t linger_ns = 5'000'000;  // wait this long for more batches to share a transaction
  int64_t transaction_timeout_ns = 30'000'000'000;
  size_t queue_max_batches = 4096;  // beyond this, write() fails at once (retry-later)
  // Passed to librdkafka as they are (the [kafka] table): TLS, SASL, tuning.
  std::vector<std::pair<std::string, std::string>> properties;
};

class KafkaSink : public Sink {
 public:
  // Returns at once: the producer starts on the sink's thread, and keeps retrying while the
  // cluster cannot be reached. Errors here are configuration errors only.
  static Result<std::unique_ptr<KafkaSink>> start(KafkaSinkOptions options, const Clock& clock);
  ~KafkaSink() override;

  void write(SinkBatch batch, SinkCallback done) override;
  std::optional<std::string> not_ready_reason() const override;
  void session_started(const std::string& agent_id) override;
  void append_metrics(std::string& out) const override;

  struct Counters {
    uint64_t transactions_committed = 0;
    uint64_t transactions_aborted = 0;
    uint64_t producer_rebuilds = 0;
    uint64_t mark_reloads = 0;
  };
  Counters counters() const;

  // Makes librdkafka raise a fatal error before the next transaction (rd_kafka_test_fatal_
  // error): how the tests show that a fatal error rebuilds the producer and loses nothing.
  void inject_fatal_error();

  struct Impl;

 private:
  explicit KafkaSink(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::gateway
