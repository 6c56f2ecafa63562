#pragma once
// The Kafka sink's librdkafka client: owned handles and errors, the configuration every
// client gets (bootstrap.servers, the [kafka] pass-through, librdkafka's log into ours), the
// transactional or idempotent producer, topic checks and creation, and the one read of the
// compacted offsets topic that gives each agent's high-water mark (docs/gateway.md).
// Nothing here keeps state between calls; kafka_sink.cpp owns the producer and the marks.
//
// Thread-safety: the functions may be called from any thread; a Handle belongs to one.

#include <librdkafka/rdkafka.h>

#include <atomic>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/result.hpp"
#include "gateway/sinks/kafka_sink.hpp"

namespace outpost::gateway::kafka {

// librdkafka's error objects, owned.
struct KError {
  rd_kafka_error_t* e = nullptr;
  explicit KError(rd_kafka_error_t* err) : e(err) {}
  KError(const KError&) = delete;
  KError& operator=(const KError&) = delete;
  ~KError() {
    if (e) rd_kafka_error_destroy(e);
  }
  explicit operator bool() const { return e != nullptr; }
  std::string what() const { return e ? rd_kafka_error_string(e) : "ok"; }
  bool fatal() const { return e && rd_kafka_error_is_fatal(e); }
  bool retriable() const { return e && rd_kafka_error_is_retriable(e); }
  bool abortable() const { return e && rd_kafka_error_txn_requires_abort(e); }
};

// A producer or consumer, destroyed with its owner.
struct Handle {
  rd_kafka_t* rk = nullptr;
  Handle() = default;
  explicit Handle(rd_kafka_t* h) : rk(h) {}
  Handle(Handle&& o) noexcept : rk(o.rk) { o.rk = nullptr; }
  Handle& operator=(Handle&& o) noexcept {
    reset();
    rk = o.rk;
    o.rk = nullptr;
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  void reset() {
    if (rk) rd_kafka_destroy(rk);
    rk = nullptr;
  }
};

// Checks the configuration without connecting (at start: a clear error, exit 2).
Result<void> validate(const KafkaSinkOptions& opt);

// The producer: idempotent, acks=all, zstd; transactional when opt.transactions, otherwise
// each failed delivery report adds one to `delivery_failures` (which must outlive it).
Result<Handle> new_producer(const KafkaSinkOptions& opt, std::atomic<uint64_t>* delivery_failures);

// Which configured topics (and the offsets topic) the cluster does not have.
Result<std::vector<std::string>> missing_topics(rd_kafka_t* rk, const KafkaSinkOptions& opt);
// Creates them (the offsets topic compacted, with one partition).
Result<void> create_topics(rd_kafka_t* rk, const KafkaSinkOptions& opt,
                           const std::vector<std::string>& names);

// Reads the offsets topic (read_committed) from its beginning to its end: the highest mark
// of each agent, of just the agents in `only` when it is given.
Result<std::unordered_map<std::string, uint64_t>> read_marks(const KafkaSinkOptions& opt,
                                                             const std::set<std::string>* only);

// One record, copied; waits while librdkafka's queue is full. Takes `headers` (may be null).
Result<void> produce(rd_kafka_t* rk, const std::string& topic, const std::string& key,
                     const std::string& value, rd_kafka_headers_t* headers);

// librdkafka's fatal error, if the producer has one, in `why`.
bool is_fatal(rd_kafka_t* rk, std::string* why);

}  // namespace outpost::gateway::kafka
