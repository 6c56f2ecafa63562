#include "gateway/sinks/kafka_sink.hpp"

#include <chrono>

#include "common/errc.hpp"
#include "gateway/sinks/kafka_sink_impl.hpp"

namespace outpost::gateway {

// ---- the sink thread ------------------------------------------------------------------------

void KafkaSink::Impl::run() {
  while (true) {
    if (!producer.rk && !connect()) break;
    std::vector<Queued> group;
    std::set<std::string> reload;
    {
      std::unique_lock lock(mu);
      wake.wait(lock, [this] { return stopping || !queue.empty(); });
      if (queue.empty() && stopping) break;
      // Linger for more batches, to commit them in one transaction.
      const int64_t deadline = clock.mono_ns() + opt.linger_ns;
      while (!stopping && queue.size() < opt.max_batches_per_transaction &&
             clock.mono_ns() < deadline) {
        clock.wait_until(lock, wake, deadline);
      }
      while (!queue.empty() && group.size() < opt.max_batches_per_transaction) {
        group.push_back(std::move(queue.front()));
        queue.pop_front();
      }
      for (const Queued& q : group) {
        if (stale.erase(q.batch.mark_key())) reload.insert(q.batch.mark_key());
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

bool KafkaSink::Impl::connect() {
  int64_t backoff_ms = 500;
  while (true) {
    {
      std::lock_guard lock(mu);
      if (stopping) return false;
    }
    auto attempt = [&]() -> Result<void> {
      auto p = kafka::new_producer(opt, &delivery_failures);
      if (!p) return p.error();
      auto missing = kafka::missing_topics(p->rk, opt);
      if (!missing) return missing.error();
      if (!missing->empty()) {
        if (!opt.create_topics) {
          return make_error(common_errc::config_invalid,
                            "topic " + fmt::format("{}", fmt::join(*missing, ", ")) +
                                " does not exist in the cluster: create it, or set "
                                "sink.kafka.create_topics = true");
        }
        if (auto r = kafka::create_topics(p->rk, opt, *missing); !r) return r;
      }
      if (opt.transactions) {
        kafka::KError init(rd_kafka_init_transactions(p->rk, 30'000));
        if (init) {
          return make_error(sink_errc::unavailable, "init_transactions: " + init.what());
        }
      }
      auto loaded = kafka::read_marks(opt, nullptr);
      if (!loaded) return loaded.error();
      count(&Counters::mark_reloads);
      book.reset_marks(std::move(*loaded));
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
                opt.transactional_id, book.marks().size());
      return true;
    }
    set_not_ready(describe_sink_error(r.error()));
    log->warn("Kafka not ready: {}; retrying in {} ms", r.error().describe(), backoff_ms);
    fail_queued("the Kafka sink is not ready: " + r.error().describe());
    std::unique_lock lock(mu);
    wake.wait_for(lock, std::chrono::milliseconds(backoff_ms), [this] { return stopping; });
    backoff_ms = std::min<int64_t>(backoff_ms * 2, 10'000);
  }
}

void KafkaSink::Impl::fail_queued(const std::string& why) {
  std::deque<Queued> failed;
  {
    std::lock_guard lock(mu);
    failed.swap(queue);
  }
  for (Queued& q : failed) q.done(make_error(sink_errc::unavailable, why));
}

void KafkaSink::Impl::count(uint64_t Counters::*field) {
  std::lock_guard lock(mu);
  ++(counters.*field);
}

void KafkaSink::Impl::set_not_ready(std::optional<std::string> why) {
  std::lock_guard lock(mu);
  not_ready = std::move(why);
}

void KafkaSink::Impl::rebuild(const std::string& why) {
  log->error("rebuilding the Kafka producer after: {}", why);
  count(&Counters::producer_rebuilds);
  producer.reset();
  set_not_ready(describe_sink_error(
      make_error(sink_errc::unavailable, "Kafka: rebuilding the producer after: " + why)));
}

// ---- the public API -------------------------------------------------------------------------

Result<std::unique_ptr<KafkaSink>> KafkaSink::start(KafkaSinkOptions options, const Clock& clock) {
  auto impl = std::make_unique<Impl>(std::move(options), clock);
  if (auto r = kafka::validate(impl->opt); !r) return r.error();
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
  sink_errc refused_code = sink_errc::unavailable;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopping) {
      refused = "the Kafka sink is shutting down";
    } else if (impl_->not_ready) {
      refused = "the Kafka sink is not ready: " + *impl_->not_ready;
    } else if (impl_->queue.size() >= impl_->opt.queue_max_batches) {
      refused_code = sink_errc::queue_full;
      refused = "the Kafka sink's queue is full (" + std::to_string(impl_->queue.size()) +
                " batches wait for Kafka)";
    } else if (auto held = impl_->book.holds_back(batch)) {
      refused_code = sink_errc::gap;
      refused = std::move(held);
    } else {
      impl_->queue.push_back(Impl::Queued{std::move(batch), std::move(done)});
    }
  }
  if (refused) {
    impl_->book.failed(batch.mark_key(), batch.first_seq);
    done(make_error(refused_code, *refused));
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
  impl_->stale.insert(agent_id + SinkBatch::kLiveLaneMark);  // its live lane's mark too
  impl_->book.session_started(agent_id);  // the new session resends from its last ack
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
