#include "gateway/sinks/kafka_client.hpp"

#include <chrono>

#include "common/errc.hpp"
#include "common/log.hpp"

namespace outpost::gateway::kafka {
namespace {

constexpr int kMetadataTimeoutMs = 5000;

rd_kafka_conf_t* base_conf(const KafkaSinkOptions& opt, std::string* err) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char buf[512];
  auto set = [&](const std::string& k, const std::string& v) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), buf, sizeof buf) != RD_KAFKA_CONF_OK) {
      *err = "kafka." + k + " = \"" + v + "\": " + buf;
      return false;
    }
    return true;
  };
  // librdkafka's own log lines go through the gateway's log (logger "librdkafka").
  rd_kafka_conf_set_log_cb(conf,
                           [](const rd_kafka_t*, int level, const char* fac, const char* text) {
                             static const auto logger = log::get("librdkafka");
                             const auto lvl = level <= 3   ? spdlog::level::err
                                              : level == 4 ? spdlog::level::warn
                                              : level <= 6 ? spdlog::level::info
                                                           : spdlog::level::debug;
                             logger->log(lvl, "{}: {}", fac, text);
                           });
  bool ok = set("bootstrap.servers", opt.brokers);
  for (const auto& [k, v] : opt.properties) ok = ok && set(k, v);
  if (!ok) {
    rd_kafka_conf_destroy(conf);
    return nullptr;
  }
  return conf;
}

}  // namespace

Result<void> validate(const KafkaSinkOptions& opt) {
  std::string err;
  rd_kafka_conf_t* conf = base_conf(opt, &err);
  if (!conf) return make_error(common_errc::config_invalid, "config: " + err);
  rd_kafka_conf_destroy(conf);
  if (opt.transactional_id.empty()) {
    return make_error(common_errc::config_invalid, "sink.kafka.transactional_id is empty");
  }
  return {};
}

Result<Handle> new_producer(const KafkaSinkOptions& opt, std::atomic<uint64_t>* delivery_failures) {
  std::string err;
  rd_kafka_conf_t* conf = base_conf(opt, &err);
  if (!conf) return make_error(common_errc::config_invalid, err);
  char buf[512];
  std::vector<std::pair<const char*, std::string>> fixed = {
      {"enable.idempotence", "true"},
      {"acks", "all"},
      {"compression.type", "zstd"},
      {"linger.ms", "5"},
      {"message.timeout.ms", std::to_string(opt.transaction_timeout_ns / 1'000'000)},
  };
  if (opt.transactions) {
    fixed.emplace_back("transactional.id", opt.transactional_id);
    fixed.emplace_back("transaction.timeout.ms",
                       std::to_string(opt.transaction_timeout_ns / 1'000'000));
  } else {
    // Without transactions, success is each record's delivery report.
    rd_kafka_conf_set_opaque(conf, delivery_failures);
    rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void* count) {
      if (m->err) static_cast<std::atomic<uint64_t>*>(count)->fetch_add(1);
    });
  }
  for (const auto& [k, v] : fixed) {
    if (rd_kafka_conf_set(conf, k, v.c_str(), buf, sizeof buf) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return make_error(common_errc::config_invalid, std::string(k) + ": " + buf);
    }
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, buf, sizeof buf);
  if (!rk) return make_error(common_errc::config_invalid, std::string("producer: ") + buf);
  return Handle(rk);
}

Result<std::vector<std::string>> missing_topics(rd_kafka_t* rk, const KafkaSinkOptions& opt) {
  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, nullptr, &md, kMetadataTimeoutMs);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return make_error(sink_errc::unavailable, "cannot read the cluster's metadata from " +
                                                  opt.brokers + ": " + rd_kafka_err2str(e));
  }
  std::set<std::string> have;
  for (int i = 0; i < md->topic_cnt; ++i) {
    if (md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR) have.insert(md->topics[i].topic);
  }
  rd_kafka_metadata_destroy(md);
  std::vector<std::string> missing;
  std::set<std::string> wanted(opt.topics.begin(), opt.topics.end());
  wanted.insert(opt.offsets_topic);
  wanted.insert(opt.dead_letter_topic);
  for (const std::string& t : wanted) {
    if (!have.count(t)) missing.push_back(t);
  }
  return missing;
}

Result<void> create_topics(rd_kafka_t* rk, const KafkaSinkOptions& opt,
                           const std::vector<std::string>& names) {
  std::vector<rd_kafka_NewTopic_t*> topics;
  char buf[512];
  for (const std::string& name : names) {
    const bool offsets = name == opt.offsets_topic;
    rd_kafka_NewTopic_t* t = rd_kafka_NewTopic_new(name.c_str(), offsets ? 1 : opt.partitions,
                                                   opt.replication, buf, sizeof buf);
    if (!t) return make_error(common_errc::config_invalid, "topic " + name + ": " + buf);
    if (offsets) rd_kafka_NewTopic_set_config(t, "cleanup.policy", "compact");
    topics.push_back(t);
  }
  rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, topics.data(), topics.size(), nullptr, q);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30'000);
  std::string problem;
  if (!ev) {
    problem = "no answer from the cluster";
  } else if (rd_kafka_event_error(ev)) {
    problem = rd_kafka_event_error_string(ev);
  } else {
    size_t n = 0;
    const rd_kafka_topic_result_t** res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    for (size_t i = 0; i < n; ++i) {
      rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
      if (e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        problem +=
            std::string(rd_kafka_topic_result_name(res[i])) + ": " +
            (rd_kafka_topic_result_error_string(res[i]) ? rd_kafka_topic_result_error_string(res[i])
                                                        : rd_kafka_err2str(e)) +
            "; ";
      }
    }
  }
  if (ev) rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_NewTopic_destroy_array(topics.data(), topics.size());
  if (!problem.empty()) {
    return make_error(sink_errc::unavailable, "creating the topics failed: " + problem);
  }
  log::get("kafka-sink")->info("created topics {}", fmt::join(names, ", "));
  return {};
}

Result<std::unordered_map<std::string, uint64_t>> read_marks(const KafkaSinkOptions& opt,
                                                             const std::set<std::string>* only) {
  std::string err;
  rd_kafka_conf_t* conf = base_conf(opt, &err);
  if (!conf) return make_error(common_errc::config_invalid, err);
  char buf[512];
  const std::pair<const char*, const char*> fixed[] = {
      {"group.id", "outpost-gateway-marks"},  // required by librdkafka; nothing is committed
      {"enable.auto.commit", "false"},
      {"isolation.level", "read_committed"},
      {"enable.partition.eof", "true"},
  };
  for (const auto& [k, v] : fixed) rd_kafka_conf_set(conf, k, v, buf, sizeof buf);
  Handle consumer(rd_kafka_new(RD_KAFKA_CONSUMER, conf, buf, sizeof buf));
  if (!consumer.rk) return make_error(sink_errc::unavailable, std::string("consumer: ") + buf);

  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_topic_t* t = rd_kafka_topic_new(consumer.rk, opt.offsets_topic.c_str(), nullptr);
  rd_kafka_resp_err_t e = rd_kafka_metadata(consumer.rk, 0, t, &md, kMetadataTimeoutMs);
  rd_kafka_topic_destroy(t);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return make_error(sink_errc::unavailable, "cannot read the metadata of " + opt.offsets_topic +
                                                  ": " + rd_kafka_err2str(e));
  }
  int partitions = md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR
                       ? md->topics[0].partition_cnt
                       : 0;
  rd_kafka_metadata_destroy(md);
  if (partitions == 0) {
    return make_error(sink_errc::config, "topic " + opt.offsets_topic + " does not exist");
  }
  rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; ++p) {
    rd_kafka_topic_partition_list_add(parts, opt.offsets_topic.c_str(), p)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
  }
  rd_kafka_assign(consumer.rk, parts);
  rd_kafka_topic_partition_list_destroy(parts);
  std::unordered_map<std::string, uint64_t> found;
  int at_end = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (at_end < partitions) {
    if (std::chrono::steady_clock::now() > deadline) {
      rd_kafka_assign(consumer.rk, nullptr);
      return make_error(sink_errc::unavailable,
                        "reading " + opt.offsets_topic + " did not reach its end in 30 s");
    }
    rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer.rk, 500);
    if (!m) continue;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      ++at_end;
    } else if (m->err) {
      std::string what = rd_kafka_message_errstr(m);
      rd_kafka_message_destroy(m);
      rd_kafka_assign(consumer.rk, nullptr);
      return make_error(sink_errc::unavailable, "reading " + opt.offsets_topic + ": " + what);
    } else if (m->key && m->payload) {
      std::string agent(static_cast<const char*>(m->key), m->key_len);
      if (!only || only->count(agent)) {
        uint64_t seq = std::strtoull(
            std::string(static_cast<const char*>(m->payload), m->len).c_str(), nullptr, 10);
        uint64_t& mark = found[agent];
        mark = std::max(mark, seq);
      }
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_assign(consumer.rk, nullptr);
  return found;
}

Result<void> produce(rd_kafka_t* rk, const std::string& topic, const std::string& key,
                     const std::string& value, rd_kafka_headers_t* headers) {
  while (true) {
    rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key.data(), key.size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) return {};
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      rd_kafka_poll(rk, 50);
      continue;
    }
    if (headers) rd_kafka_headers_destroy(headers);
    return make_error(sink_errc::unavailable, "produce to " + topic + ": " + rd_kafka_err2str(e));
  }
}

bool is_fatal(rd_kafka_t* rk, std::string* why) {
  char buf[512];
  if (rd_kafka_fatal_error(rk, buf, sizeof buf) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    return false;
  }
  *why = std::string("fatal producer error: ") + buf;
  return true;
}

}  // namespace outpost::gateway::kafka
