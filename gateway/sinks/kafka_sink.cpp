#include "gateway/sinks/kafka_sink.hpp"

#include <librdkafka/rdkafka.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "common/errc.hpp"
#include "common/log.hpp"
#include "gateway/sinks/marks.hpp"
#include "proto/event_codec.hpp"
#include "proto/event_view.hpp"

namespace outpost::gateway {
namespace {

constexpr int kMetadataTimeoutMs = 5000;

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
  ~Handle() { reset(); }
  void reset() {
    if (rk) rd_kafka_destroy(rk);
    rk = nullptr;
  }
};

struct Queued {
  SinkBatch batch;
  SinkCallback done;
};

}  // namespace

struct KafkaSink::Impl {
  KafkaSinkOptions opt;
  const Clock& clock;
  std::shared_ptr<spdlog::logger> log = log::get("kafka-sink");

  // Sink thread only.
  Handle producer;
  std::unordered_map<std::string, uint64_t> marks;  // committed high-water mark per agent

  mutable std::mutex mu;
  std::condition_variable wake;
  std::deque<Queued> queue;
  std::set<std::string> stale;  // agents whose mark must be reloaded before their next write
  std::optional<std::string> not_ready = std::string("starting: connecting to Kafka");
  bool stopping = false;
  bool inject_fatal = false;
  // Per agent, the first seq of its oldest batch that failed here and was not yet written.
  // Until a batch starting at or below it is written, later batches of that agent are
  // refused: written first, they would raise the mark above the failed batch, which would
  // then count as duplicates when it is resent (a loss). A new session clears it.
  std::unordered_map<std::string, uint64_t> failed_from;
  std::atomic<uint64_t> delivery_failures{0};
  Counters counters;
  std::thread thread;

  Impl(KafkaSinkOptions o, const Clock& c) : opt(std::move(o)), clock(c) {}

  rd_kafka_conf_t* base_conf(std::string* err) {
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

  // Checks a configuration without connecting (at start: a clear error, exit 2).
  Result<void> validate() {
    std::string err;
    rd_kafka_conf_t* conf = base_conf(&err);
    if (!conf) return make_error(common_errc::config_invalid, "config: " + err);
    rd_kafka_conf_destroy(conf);
    if (opt.transactional_id.empty()) {
      return make_error(common_errc::config_invalid, "sink.kafka.transactional_id is empty");
    }
    return {};
  }

  Result<Handle> new_producer() {
    std::string err;
    rd_kafka_conf_t* conf = base_conf(&err);
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
      rd_kafka_conf_set_opaque(conf, this);
      rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void* me) {
        if (m->err) static_cast<Impl*>(me)->delivery_failures.fetch_add(1);
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

  // Which configured topics do not exist (or all of them, with a reason, on a timeout).
  Result<std::vector<std::string>> missing_topics(rd_kafka_t* rk) {
    const rd_kafka_metadata_t* md = nullptr;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, nullptr, &md, kMetadataTimeoutMs);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return make_error(common_errc::bad_input, "cannot read the cluster's metadata from " +
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
    for (const std::string& t : wanted) {
      if (!have.count(t)) missing.push_back(t);
    }
    return missing;
  }

  Result<void> create_topics(rd_kafka_t* rk, const std::vector<std::string>& names) {
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
          problem += std::string(rd_kafka_topic_result_name(res[i])) + ": " +
                     (rd_kafka_topic_result_error_string(res[i])
                          ? rd_kafka_topic_result_error_string(res[i])
                          : rd_kafka_err2str(e)) +
                     "; ";
        }
      }
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy_array(topics.data(), topics.size());
    if (!problem.empty()) {
      return make_error(common_errc::bad_input, "creating the topics failed: " + problem);
    }
    log->info("created topics {}", fmt::join(names, ", "));
    return {};
  }

  // Reads the offsets topic (read_committed) from the beginning to its end. With `only`, just
  // those agents' records matter. Returns the marks found.
  Result<std::unordered_map<std::string, uint64_t>> read_marks(const std::set<std::string>* only) {
    std::string err;
    rd_kafka_conf_t* conf = base_conf(&err);
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
    if (!consumer.rk) return make_error(common_errc::bad_input, std::string("consumer: ") + buf);

    const rd_kafka_metadata_t* md = nullptr;
    rd_kafka_topic_t* t = rd_kafka_topic_new(consumer.rk, opt.offsets_topic.c_str(), nullptr);
    rd_kafka_resp_err_t e = rd_kafka_metadata(consumer.rk, 0, t, &md, kMetadataTimeoutMs);
    rd_kafka_topic_destroy(t);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return make_error(common_errc::bad_input, "cannot read the metadata of " + opt.offsets_topic +
                                                    ": " + rd_kafka_err2str(e));
    }
    int partitions = md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR
                         ? md->topics[0].partition_cnt
                         : 0;
    rd_kafka_metadata_destroy(md);
    if (partitions == 0) {
      return make_error(common_errc::bad_input, "topic " + opt.offsets_topic + " does not exist");
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
        return make_error(common_errc::bad_input,
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
        return make_error(common_errc::bad_input, "reading " + opt.offsets_topic + ": " + what);
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
    count(&Counters::mark_reloads);
    return found;
  }

  void count(uint64_t Counters::*field) {
    std::lock_guard lock(mu);
    ++(counters.*field);
  }

  void set_not_ready(std::optional<std::string> why) {
    std::lock_guard lock(mu);
    not_ready = std::move(why);
  }

  // Connects: the producer, its transactions, the topics, the marks. Retries until it works
  // or the sink stops.
  bool connect() {
    int64_t backoff_ms = 500;
    while (true) {
      {
        std::lock_guard lock(mu);
        if (stopping) return false;
      }
      auto attempt = [&]() -> Result<void> {
        auto p = new_producer();
        if (!p) return p.error();
        auto missing = missing_topics(p->rk);
        if (!missing) return missing.error();
        if (!missing->empty()) {
          if (!opt.create_topics) {
            return make_error(common_errc::config_invalid,
                              "topic " + fmt::format("{}", fmt::join(*missing, ", ")) +
                                  " does not exist in the cluster: create it, or set "
                                  "sink.kafka.create_topics = true");
          }
          if (auto r = create_topics(p->rk, *missing); !r) return r;
        }
        if (opt.transactions) {
          KError init(rd_kafka_init_transactions(p->rk, 30'000));
          if (init) {
            return make_error(common_errc::bad_input, "init_transactions: " + init.what());
          }
        }
        auto loaded = read_marks(nullptr);
        if (!loaded) return loaded.error();
        marks = std::move(*loaded);
        producer = std::move(*p);
        return {};
      };
      auto r = attempt();
      if (r) {
        {
          std::lock_guard lock(mu);
          stale.clear();
          not_ready.reset();
        }
        log->info("connected to Kafka at {} as {}; {} agents' high-water marks loaded", opt.brokers,
                  opt.transactional_id, marks.size());
        return true;
      }
      set_not_ready("Kafka: " + r.error().describe());
      log->warn("Kafka not ready: {}; retrying in {} ms", r.error().describe(), backoff_ms);
      fail_queued("the Kafka sink is not ready: " + r.error().describe());
      std::unique_lock lock(mu);
      wake.wait_for(lock, std::chrono::milliseconds(backoff_ms), [this] { return stopping; });
      backoff_ms = std::min<int64_t>(backoff_ms * 2, 10'000);
    }
  }

  void fail_queued(const std::string& why) {
    std::deque<Queued> failed;
    {
      std::lock_guard lock(mu);
      failed.swap(queue);
    }
    for (Queued& q : failed) q.done(make_error(common_errc::bad_input, why));
  }

  void run() {
    while (true) {
      if (!producer.rk && !connect()) break;
      std::vector<Queued> group;
      std::set<std::string> reload;
      {
        std::unique_lock lock(mu);
        wake.wait(lock, [this] { return stopping || !queue.empty(); });
        if (queue.empty() && stopping) break;
        const auto deadline =
            std::chrono::steady_clock::now() + std::chrono::nanoseconds(opt.linger_ns);
        while (!stopping && queue.size() < opt.max_batches_per_transaction &&
               wake.wait_until(lock, deadline) != std::cv_status::timeout) {
        }
        while (!queue.empty() && group.size() < opt.max_batches_per_transaction) {
          group.push_back(std::move(queue.front()));
          queue.pop_front();
        }
        for (const Queued& q : group) {
          if (stale.erase(q.batch.agent_id)) reload.insert(q.batch.agent_id);
        }
        if (inject_fatal) {
          inject_fatal = false;
          rd_kafka_test_fatal_error(producer.rk, RD_KAFKA_RESP_ERR_PRODUCER_FENCED,
                                    "injected by a test");
        }
      }
      write_group(group, reload);
    }
    fail_queued("the Kafka sink is shutting down");
  }

  // One pass over the offsets topic for all of `agents`.
  Result<void> reload_marks(const std::set<std::string>& agents) {
    if (agents.empty()) return {};
    auto found = read_marks(&agents);
    if (!found) return found.error();
    for (const auto& [agent, seq] : *found) marks[agent] = std::max(marks[agent], seq);
    return {};
  }

  Result<void> produce(const std::string& topic, const std::string& key, const std::string& value,
                       rd_kafka_headers_t* headers) {
    while (true) {
      rd_kafka_resp_err_t e = rd_kafka_producev(
          producer.rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key.data(), key.size()),
          RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_END);
      if (e == RD_KAFKA_RESP_ERR_NO_ERROR) return {};
      if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        rd_kafka_poll(producer.rk, 50);
        continue;
      }
      if (headers) rd_kafka_headers_destroy(headers);
      return make_error(common_errc::bad_input, "produce to " + topic + ": " + rd_kafka_err2str(e));
    }
  }

  void write_group(std::vector<Queued>& group, const std::set<std::string>& reload) {
    std::vector<Result<SinkResult>> results(group.size(), SinkResult{});
    auto fail_all = [&](const std::string& why) {
      {
        std::lock_guard lock(mu);
        for (const Queued& q : group) note_failed(q.batch.agent_id, q.batch.first_seq);
      }
      for (size_t i = 0; i < group.size(); ++i) {
        group[i].done(make_error(common_errc::bad_input, why));
      }
    };
    std::unordered_map<std::string, uint64_t> floors;
    {
      std::lock_guard lock(mu);
      floors = failed_from;
    }
    std::set<std::string> resent;  // agents whose failed batch this group writes again
    std::unordered_map<std::string, uint64_t> next;  // marks as this transaction leaves them
    auto mark_of = [&](const std::string& agent) -> std::optional<uint64_t> {
      if (auto it = next.find(agent); it != next.end()) return it->second;
      if (auto it = marks.find(agent); it != marks.end()) return it->second;
      return std::nullopt;
    };
    // A batch that does not continue the mark this gateway knows (a resend, or a device that
    // another gateway wrote for) makes it read that agent's mark back before deciding; so
    // does a new session (`reload`). All of them in one pass over the offsets topic.
    std::set<std::string> to_read = reload;
    for (const Queued& q : group) {
      const std::string& agent = q.batch.agent_id;
      auto m = mark_of(agent);
      if (m && q.batch.first_seq != *m + 1) to_read.insert(agent);
      next[agent] = std::max(m.value_or(0), q.batch.last_seq);
    }
    next.clear();
    if (auto r = reload_marks(to_read); !r) {
      fail_all("Kafka: " + r.error().describe());
      return;
    }
    const uint64_t failures_before = delivery_failures.load();
    KError begun(opt.transactions ? rd_kafka_begin_transaction(producer.rk) : nullptr);
    if (begun) {
      fail_all("Kafka: begin_transaction: " + begun.what());
      if (begun.fatal()) rebuild("begin_transaction: " + begun.what());
      return;
    }
    Result<void> produced;
    for (size_t i = 0; i < group.size() && produced; ++i) {
      SinkBatch& b = group[i].batch;
      const MarkDecision decision = decide_mark(mark_of(b.agent_id), b);
      const uint64_t mark = decision.mark;
      auto floor = floors.find(b.agent_id);
      if (floor != floors.end() && b.first_seq > floor->second) {
        results[i] =
            make_error(common_errc::bad_input, "an earlier batch of agent " + b.agent_id +
                                                   " (from seq " + std::to_string(floor->second) +
                                                   ") was not written; send it first");
        continue;
      }
      if (decision.refuse) {
        results[i] = make_error(common_errc::bad_input, *decision.refuse);
        floors[b.agent_id] = b.first_seq;
        continue;
      }
      if (floor != floors.end()) {
        resent.insert(b.agent_id);
        floors.erase(floor);
      }
      SinkResult r;
      r.gap_lost = decision.lost;
      r.gap_first = decision.mark - decision.lost + 1;
      for (const wire::EventView e : b.events) {
        if (e.seq <= mark) {
          ++r.duplicates;
          continue;
        }
        const EventKind kind = kind_from_number(e.kind).value_or(EventKind::json);
        const int k = kind_index(kind);
        std::string value;
        if (opt.json_values[k]) {
          proto::append_event_json(value, e.bytes, b.agent_id);
        } else {
          proto::append_restamped(value, e.bytes, b.agent_id);
        }
        rd_kafka_headers_t* h = rd_kafka_headers_new(4);
        const std::string seq = std::to_string(e.seq);
        const std::string collected = std::to_string(e.collected_at);
        rd_kafka_header_add(h, "agent_id", -1, b.agent_id.data(), b.agent_id.size());
        rd_kafka_header_add(h, "seq", -1, seq.data(), seq.size());
        rd_kafka_header_add(h, "schema", -1, e.schema.data(), e.schema.size());
        rd_kafka_header_add(h, "collected_at", -1, collected.data(), collected.size());
        produced = produce(opt.topics[k], b.agent_id, value, h);
        if (!produced) break;
        ++r.written;
      }
      results[i] = r;
      next[b.agent_id] = std::max(mark, b.last_seq);
    }
    if (produced) {
      for (const auto& [agent, seq] : next) {
        if (marks.count(agent) && marks[agent] == seq) continue;
        produced = produce(opt.offsets_topic, agent, std::to_string(seq), nullptr);
        if (!produced) break;
      }
    }
    if (!opt.transactions) {
      // At least once: the records are acknowledged (acks=all) or the batches fail and are
      // sent again, possibly writing some records twice.
      rd_kafka_flush(producer.rk, static_cast<int>(opt.transaction_timeout_ns / 1'000'000));
      std::string fatal;
      if (!produced || rd_kafka_outq_len(producer.rk) > 0 ||
          delivery_failures.load() != failures_before || is_fatal(&fatal)) {
        if (!fatal.empty()) rebuild(fatal);
        fail_all("Kafka: " + (produced ? std::string("records were not delivered")
                                       : produced.error().describe()));
        return;
      }
      for (const auto& [agent, seq] : next) marks[agent] = seq;
      settle_floors(group, results, resent);
      for (size_t i = 0; i < group.size(); ++i) group[i].done(results[i]);
      return;
    }
    if (!produced) {
      std::string fatal;
      if (is_fatal(&fatal)) {
        rebuild(fatal);
      } else {
        KError aborted(rd_kafka_abort_transaction(producer.rk, 30'000));
        if (aborted) rebuild("abort after a failed produce: " + aborted.what());
      }
      count(&Counters::transactions_aborted);
      fail_all("Kafka: " + produced.error().describe());
      return;
    }
    auto committed = std::make_unique<KError>(rd_kafka_commit_transaction(producer.rk, 60'000));
    if (*committed && committed->retriable()) {
      committed = std::make_unique<KError>(rd_kafka_commit_transaction(producer.rk, 60'000));
    }
    if (*committed) {
      const std::string why = committed->what();
      count(&Counters::transactions_aborted);
      std::string fatal;
      if (is_fatal(&fatal)) {
        rebuild(fatal);
      } else if (committed->abortable()) {
        KError aborted(rd_kafka_abort_transaction(producer.rk, 30'000));
        if (aborted) rebuild("abort: " + aborted.what());
      } else {
        rebuild("commit_transaction: " + why);
      }
      log->warn("a Kafka transaction of {} batches failed: {}; the agents will resend",
                group.size(), why);
      fail_all("Kafka: commit_transaction: " + why);
      return;
    }
    count(&Counters::transactions_committed);
    for (const auto& [agent, seq] : next) marks[agent] = seq;
    settle_floors(group, results, resent);
    for (size_t i = 0; i < group.size(); ++i) group[i].done(results[i]);
  }

  // Under mu.
  void note_failed(const std::string& agent, uint64_t first_seq) {
    auto [it, inserted] = failed_from.emplace(agent, first_seq);
    if (!inserted) it->second = std::min(it->second, first_seq);
  }

  // After a committed group: a resent batch clears its agent's floor; a refused one sets it.
  void settle_floors(const std::vector<Queued>& group,
                     const std::vector<Result<SinkResult>>& results,
                     const std::set<std::string>& resent) {
    std::lock_guard lock(mu);
    for (const std::string& agent : resent) failed_from.erase(agent);
    for (size_t i = 0; i < group.size(); ++i) {
      if (!results[i]) note_failed(group[i].batch.agent_id, group[i].batch.first_seq);
    }
  }

  bool is_fatal(std::string* why) {
    char buf[512];
    if (rd_kafka_fatal_error(producer.rk, buf, sizeof buf) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      return false;
    }
    *why = std::string("fatal producer error: ") + buf;
    return true;
  }

  // A fatal producer error: a new producer with the same transactional.id fences the old one
  // and the broker aborts its open transaction; the marks are read again.
  void rebuild(const std::string& why) {
    log->error("rebuilding the Kafka producer after: {}", why);
    count(&Counters::producer_rebuilds);
    producer.reset();
    set_not_ready("Kafka: rebuilding the producer after: " + why);
  }
};

Result<std::unique_ptr<KafkaSink>> KafkaSink::start(KafkaSinkOptions options, const Clock& clock) {
  auto impl = std::make_unique<Impl>(std::move(options), clock);
  if (auto r = impl->validate(); !r) return r.error();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<KafkaSink>(new KafkaSink(std::move(impl)));
}

KafkaSink::KafkaSink(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

KafkaSink::~KafkaSink() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->thread.join();
}

void KafkaSink::write(SinkBatch batch, SinkCallback done) {
  std::optional<std::string> refused;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopping) {
      refused = "the Kafka sink is shutting down";
    } else if (impl_->not_ready) {
      refused = "the Kafka sink is not ready: " + *impl_->not_ready;
    } else if (impl_->queue.size() >= impl_->opt.queue_max_batches) {
      refused = "the Kafka sink's queue is full (" + std::to_string(impl_->queue.size()) +
                " batches wait for Kafka)";
    } else if (auto f = impl_->failed_from.find(batch.agent_id);
               f != impl_->failed_from.end() && batch.first_seq > f->second) {
      refused = "an earlier batch of agent " + batch.agent_id + " (from seq " +
                std::to_string(f->second) + ") was not written; send it first";
    } else {
      impl_->queue.push_back(Queued{std::move(batch), std::move(done)});
    }
  }
  if (refused) {
    {
      std::lock_guard lock(impl_->mu);
      impl_->note_failed(batch.agent_id, batch.first_seq);
    }
    done(make_error(common_errc::bad_input, *refused));
    return;
  }
  impl_->wake.notify_all();
}

std::optional<std::string> KafkaSink::not_ready_reason() const {
  std::lock_guard lock(impl_->mu);
  return impl_->not_ready;
}

void KafkaSink::session_started(const std::string& agent_id) {
  std::lock_guard lock(impl_->mu);
  impl_->stale.insert(agent_id);
  impl_->failed_from.erase(agent_id);  // the new session resends from its last ack
}

void KafkaSink::append_metrics(std::string& out) const {
  const Counters c = counters();
  out += "# HELP outpost_gateway_kafka_transactions_total Kafka transactions by outcome.\n";
  out += "# TYPE outpost_gateway_kafka_transactions_total counter\n";
  out += "outpost_gateway_kafka_transactions_total{result=\"committed\"} " +
         std::to_string(c.transactions_committed) + "\n";
  out += "outpost_gateway_kafka_transactions_total{result=\"aborted\"} " +
         std::to_string(c.transactions_aborted) + "\n";
  out +=
      "# HELP outpost_gateway_kafka_producer_rebuilds_total Producers rebuilt after a fatal "
      "error.\n# TYPE outpost_gateway_kafka_producer_rebuilds_total counter\n";
  out +=
      "outpost_gateway_kafka_producer_rebuilds_total " + std::to_string(c.producer_rebuilds) + "\n";
  out += "# HELP outpost_gateway_kafka_mark_reads_total Passes over the offsets topic.\n";
  out += "# TYPE outpost_gateway_kafka_mark_reads_total counter\n";
  out += "outpost_gateway_kafka_mark_reads_total " + std::to_string(c.mark_reloads) + "\n";
}

void KafkaSink::inject_fatal_error() {
  std::lock_guard lock(impl_->mu);
  impl_->inject_fatal = true;
}

KafkaSink::Counters KafkaSink::counters() const {
  std::lock_guard lock(impl_->mu);
  return impl_->counters;
}

}  // namespace outpost::gateway
