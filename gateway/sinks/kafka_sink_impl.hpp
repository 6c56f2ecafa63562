#pragma once
// KafkaSink's internals, shared by its files:
//   kafka_sink.cpp         the public API, the sink thread: connecting (with backoff), the
//                          queue, grouping batches into transactions, rebuilding after a
//                          fatal error
//   kafka_transaction.cpp  one group as one transaction: the marks read back, the dedupe
//                          decision per batch (marks.hpp), the records and marks produced,
//                          commit or abort, and the per-agent floors of failed batches
//   kafka_client.cpp       librdkafka: configuration, producer, topics, the offsets topic
//
// Thread-safety: the members under "sink thread only" belong to the sink thread; the rest
// are guarded by `mu`.

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/log.hpp"
#include "gateway/sinks/kafka_client.hpp"
#include "gateway/sinks/kafka_sink.hpp"
#include "gateway/sinks/sink.hpp"

namespace outpost::gateway {

struct KafkaSink::Impl {
  struct Queued {
    SinkBatch batch;
    SinkCallback done;
  };

  KafkaSinkOptions opt;
  const Clock& clock;
  std::shared_ptr<spdlog::logger> log = log::get("kafka-sink");

  // Sink thread only.
  kafka::Handle producer;

  mutable std::mutex mu;
  std::condition_variable wake;
  std::deque<Queued> queue;
  std::set<std::string> stale;  // agents whose mark must be reloaded before their next write
  std::optional<std::string> not_ready =
      describe_sink_error(make_error(sink_errc::unavailable, "starting: connecting to Kafka"));
  bool stopping = false;
  bool inject_fatal = false;
  // The committed high-water marks, and per agent the oldest batch that failed here and was
  // not yet written (gateway/pipeline/marks.hpp): until it is, later batches of that agent are
  // refused; written first, they would raise the mark above the failed batch, which would
  // then count as duplicates when it is resent (a loss). A new session clears it.
  MarkBook book;
  std::atomic<uint64_t> delivery_failures{0};
  Counters counters;
  std::thread thread;

  Impl(KafkaSinkOptions o, const Clock& c) : opt(std::move(o)), clock(c) {}

  // kafka_sink.cpp
  void run();
  // Connects: the producer, its transactions, the topics, the marks. Retries until it works
  // or the sink stops; false when it stopped.
  bool connect();
  void fail_queued(const std::string& why);
  void count(uint64_t Counters::*field);
  void set_not_ready(std::optional<std::string> why);
  // A fatal producer error: a new producer with the same transactional.id fences the old one
  // and the broker aborts its open transaction; the marks are read again.
  void rebuild(const std::string& why);

  // kafka_transaction.cpp
  void write_group(std::vector<Queued>& group, const std::set<std::string>& reload);
  // One event's record: to its kind's topic, or a bad one's dead letter to the dead-letter
  // topic; headers agent_id, seq, schema, and the provenance (or the reason).
  Result<void> produce_event(const SinkBatch& b, const wire::EventView& e);
  // One pass over the offsets topic for all of `agents`.
  Result<void> reload_marks(const std::set<std::string>& agents);
};

}  // namespace outpost::gateway
