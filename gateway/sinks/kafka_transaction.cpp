// One group of batches as one Kafka transaction (docs/gateway.md, "Kafka sink"): the marks
// read back where a batch does not continue them, the dedupe decision per batch (marks.hpp),
// the event records and the new marks produced together, then commit or abort; and the
// per-agent floors that keep a failed batch from being overtaken.
#include "common/errc.hpp"
#include "common/json/json_reader.hpp"
#include "gateway/sinks/kafka_sink_impl.hpp"
#include "gateway/sinks/sink.hpp"
#include "proto/event_codec.hpp"
#include "proto/event_view.hpp"

namespace outpost::gateway {

Result<void> KafkaSink::Impl::reload_marks(const std::set<std::string>& agents) {
  if (agents.empty()) return {};
  auto found = kafka::read_marks(opt, &agents);
  if (!found) return found.error();
  count(&Counters::mark_reloads);
  for (const auto& [agent, seq] : *found) book.set_mark(agent, seq);
  return {};
}

Result<void> KafkaSink::Impl::produce_event(const SinkBatch& b, const wire::EventView& e) {
  auto header = [](rd_kafka_headers_t* h, const char* name, std::string_view v) {
    if (!v.empty()) rd_kafka_header_add(h, name, -1, v.data(), static_cast<ssize_t>(v.size()));
  };
  const std::string seq = std::to_string(e.seq);
  rd_kafka_headers_t* h = rd_kafka_headers_new(10);
  header(h, "agent_id", b.agent_id);
  header(h, "seq", seq);
  header(h, "schema", e.schema);
  if (b.bad(e.index)) {
    // The dead-letter record (JSON), keyed like the device's events.
    const std::string& record = b.dead_letters[e.index];
    const auto reason = json::json_string_member(record, "reason");
    header(h, "reason", reason.value_or(""));
    return kafka::produce(producer.rk, opt.dead_letter_topic, b.agent_id, record, h);
  }
  const int k = kind_index(kind_from_number(e.kind).value_or(EventKind::json));
  std::string value;
  if (opt.json_values[k]) {
    proto::append_event_json(value, e.bytes, b.agent_id, /*stamped=*/true);
  } else {
    proto::append_restamped(value, e.bytes, b.agent_id);
  }
  const std::string collected = std::to_string(e.collected_at);
  header(h, "collected_at", collected);
  // The provenance the validation stage stamped (docs/gateway.md, "Provenance").
  const proto::ProvenanceFields p = proto::read_provenance(e.bytes);
  const std::string received = p.received_at != 0 ? std::to_string(p.received_at) : "";
  header(h, "gateway_id", p.gateway_id);
  header(h, "received_at", received);
  header(h, "contract", p.contract);
  header(h, "contract_fingerprint", p.contract_fingerprint);
  header(h, "payload_sha256", p.payload_sha256);
  header(h, "relay_id", p.relay_id);
  return kafka::produce(producer.rk, opt.topics[k], b.agent_id, value, h);
}

void KafkaSink::Impl::write_group(std::vector<Queued>& group, const std::set<std::string>& reload) {
  std::vector<Result<SinkResult>> results(group.size(), SinkResult{});
  auto fail_all = [&](const std::string& why) {
    std::vector<const SinkBatch*> batches;
    for (const Queued& q : group) batches.push_back(&q.batch);
    book.failed(batches);
    for (size_t i = 0; i < group.size(); ++i) {
      group[i].done(make_error(sink_errc::unavailable, why));
    }
  };
  // A batch that does not continue the mark this gateway knows (a resend, or a device that
  // another gateway wrote for) makes it read that agent's mark back before deciding; so
  // does a new session (`reload`). All of them in one pass over the offsets topic.
  std::set<std::string> to_read = reload;
  {
    std::unordered_map<std::string, uint64_t> after;  // marks as the group would leave them
    for (const Queued& q : group) {
      const std::string agent = q.batch.mark_key();
      auto it = after.find(agent);
      auto m = it != after.end() ? std::optional<uint64_t>(it->second) : book.mark(agent);
      if (m && q.batch.first_seq != *m + 1) to_read.insert(agent);
      after[agent] = std::max(m.value_or(0), q.batch.last_seq);
    }
  }
  if (auto r = reload_marks(to_read); !r) {
    fail_all("Kafka: " + r.error().describe());
    return;
  }
  const uint64_t failures_before = delivery_failures.load();
  kafka::KError begun(opt.transactions ? rd_kafka_begin_transaction(producer.rk) : nullptr);
  if (begun) {
    fail_all("Kafka: begin_transaction: " + begun.what());
    if (begun.fatal()) rebuild("begin_transaction: " + begun.what());
    return;
  }
  Result<void> produced;
  MarkBook::Group marks(book);
  for (size_t i = 0; i < group.size() && produced; ++i) {
    SinkBatch& b = group[i].batch;
    const MarkDecision decision = marks.admit(b);
    if (decision.refuse) {
      results[i] = make_error(sink_errc::gap, *decision.refuse);
      continue;
    }
    results[i] = write_above_mark(b, decision, [&](const wire::EventView& e) {
      produced = produce_event(b, e);
      return bool(produced);
    });
    marks.written(b, decision);
  }
  if (produced) {
    for (const auto& [agent, seq] : marks.moved()) {
      if (book.mark(agent) == seq) continue;
      produced =
          kafka::produce(producer.rk, opt.offsets_topic, agent, std::to_string(seq), nullptr);
      if (!produced) break;
    }
  }
  if (!opt.transactions) {
    // At least once: the records are acknowledged (acks=all) or the batches fail and are
    // sent again, possibly writing some records twice.
    rd_kafka_flush(producer.rk, static_cast<int>(opt.transaction_timeout_ns / 1'000'000));
    std::string fatal;
    if (!produced || rd_kafka_outq_len(producer.rk) > 0 ||
        delivery_failures.load() != failures_before || kafka::is_fatal(producer.rk, &fatal)) {
      if (!fatal.empty()) rebuild(fatal);
      fail_all("Kafka: " + (produced ? std::string("records were not delivered")
                                     : produced.error().describe()));
      return;
    }
    marks.commit();
    for (size_t i = 0; i < group.size(); ++i) group[i].done(results[i]);
    return;
  }
  if (!produced) {
    std::string fatal;
    if (kafka::is_fatal(producer.rk, &fatal)) {
      rebuild(fatal);
    } else {
      kafka::KError aborted(rd_kafka_abort_transaction(producer.rk, 30'000));
      if (aborted) rebuild("abort after a failed produce: " + aborted.what());
    }
    count(&Counters::transactions_aborted);
    fail_all("Kafka: " + produced.error().describe());
    return;
  }
  auto committed =
      std::make_unique<kafka::KError>(rd_kafka_commit_transaction(producer.rk, 60'000));
  if (*committed && committed->retriable()) {
    committed = std::make_unique<kafka::KError>(rd_kafka_commit_transaction(producer.rk, 60'000));
  }
  if (*committed) {
    const std::string why = committed->what();
    count(&Counters::transactions_aborted);
    std::string fatal;
    if (kafka::is_fatal(producer.rk, &fatal)) {
      rebuild(fatal);
    } else if (committed->abortable()) {
      kafka::KError aborted(rd_kafka_abort_transaction(producer.rk, 30'000));
      if (aborted) rebuild("abort: " + aborted.what());
    } else {
      rebuild("commit_transaction: " + why);
    }
    log->warn("a Kafka transaction of {} batches failed: {}; the agents will resend", group.size(),
              why);
    fail_all("Kafka: commit_transaction: " + why);
    return;
  }
  count(&Counters::transactions_committed);
  marks.commit();
  for (size_t i = 0; i < group.size(); ++i) group[i].done(results[i]);
}

}  // namespace outpost::gateway
