#pragma once
// A real single-node Kafka broker for a test (tests/kafka/broker: KRaft, loopback, a port
// pair of its own), and a read_committed consumer that counts what a downstream reader sees.
#include <librdkafka/rdkafka.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace outpost::test {

class KafkaBroker {
 public:
  // Starts a broker on `port` (its controller on a port the system picks); check ok() / error().
  explicit KafkaBroker(uint16_t port) : port_(port) {
    auto out = run({script(), "start", dir_.path(), std::to_string(port_)});
    ok_ = out.exit_code == 0;
    error_ = out.err;
  }
  ~KafkaBroker() { (void)run({script(), "stop", dir_.path()}); }
  KafkaBroker(const KafkaBroker&) = delete;
  KafkaBroker& operator=(const KafkaBroker&) = delete;

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  std::string bootstrap() const { return "127.0.0.1:" + std::to_string(port_); }
  bool stop() { return run({script(), "stop", dir_.path()}).exit_code == 0; }
  bool restart() { return run({script(), "restart", dir_.path()}).exit_code == 0; }

  // Creates topics with kcat-free admin calls: one partition each unless given.
  bool create_topic(const std::string& name, int partitions = 1, bool compact = false) {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap().c_str(), err, sizeof err);
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) return false;
    rd_kafka_NewTopic_t* t = rd_kafka_NewTopic_new(name.c_str(), partitions, 1, err, sizeof err);
    if (compact) rd_kafka_NewTopic_set_config(t, "cleanup.policy", "compact");
    rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &t, 1, nullptr, q);
    rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30'000);
    bool ok = ev != nullptr && !rd_kafka_event_error(ev);
    if (ok) {
      size_t n = 0;
      auto** res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
      ok =
          n == 1 && (rd_kafka_topic_result_error(res[0]) == RD_KAFKA_RESP_ERR_NO_ERROR ||
                     rd_kafka_topic_result_error(res[0]) == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS);
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(t);
    rd_kafka_destroy(rk);
    return ok;
  }

 private:
  static std::string script() { return std::string(OUTPOST_SOURCE_DIR) + "/tests/kafka/broker"; }
  TempDir dir_;
  uint16_t port_;
  bool ok_ = false;
  std::string error_;
};

struct ConsumedRecord {
  std::string topic, key, value;
  std::map<std::string, std::string> headers;
};

// Every committed record of `topics` (read_committed), from the beginning to the current end
// of each partition. Empty with `error` set when the cluster cannot be read.
inline std::vector<ConsumedRecord> read_committed(const std::string& bootstrap,
                                                  const std::vector<std::string>& topics,
                                                  std::string* error) {
  std::vector<ConsumedRecord> out;
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), err, sizeof err);
  rd_kafka_conf_set(conf, "group.id", "outpost-test-reader", err, sizeof err);
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err);
  rd_kafka_conf_set(conf, "isolation.level", "read_committed", err, sizeof err);
  rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof err);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (!rk) {
    *error = err;
    return out;
  }
  rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(8);
  int partitions = 0;
  for (const std::string& topic : topics) {
    const rd_kafka_metadata_t* md = nullptr;
    rd_kafka_topic_t* t = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
    if (rd_kafka_metadata(rk, 0, t, &md, 10'000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      for (int p = 0; p < md->topics[0].partition_cnt; ++p) {
        rd_kafka_topic_partition_list_add(parts, topic.c_str(), p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
        ++partitions;
      }
      rd_kafka_metadata_destroy(md);
    } else {
      *error = "no metadata for " + topic;
    }
    rd_kafka_topic_destroy(t);
  }
  rd_kafka_assign(rk, parts);
  rd_kafka_topic_partition_list_destroy(parts);
  int at_end = 0, idle = 0;
  while (at_end < partitions && idle < 120) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 500);
    if (!m) {
      ++idle;
      continue;
    }
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      ++at_end;
    } else if (m->err) {
      *error = rd_kafka_message_errstr(m);
    } else {
      ConsumedRecord r;
      r.topic = rd_kafka_topic_name(m->rkt);
      if (m->key) r.key.assign(static_cast<const char*>(m->key), m->key_len);
      if (m->payload) r.value.assign(static_cast<const char*>(m->payload), m->len);
      rd_kafka_headers_t* h = nullptr;
      if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char* name = nullptr;
        const void* value = nullptr;
        size_t size = 0;
        for (size_t i = 0;
             rd_kafka_header_get_all(h, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
             ++i) {
          r.headers[name] = std::string(static_cast<const char*>(value), size);
        }
      }
      out.push_back(std::move(r));
    }
    rd_kafka_message_destroy(m);
  }
  if (at_end < partitions && error->empty()) *error = "did not reach the end of every partition";
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return out;
}

}  // namespace outpost::test
