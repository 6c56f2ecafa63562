#include "gateway/pipeline/validation.hpp"

#include <sstream>

#include "common/errc.hpp"
#include "common/json/json_writer.hpp"
#include "common/tls/digest.hpp"
#include "proto/contract_registry.hpp"
#include "proto/event_view.hpp"
#include "proto/validator.hpp"

namespace outpost::gateway {
namespace {

constexpr std::string_view kUnknownLabel = "unknown";

// A bad event's record (docs/gateway.md, "Dead letters"). `withhold`: its contract has
// sensitive fields, so the original bytes stay out and only their digest goes in.
std::string dead_letter(const SinkBatch& b, const wire::EventView& e, const proto::Rejection& why,
                        std::string_view gateway_id, int64_t received_at, bool withhold) {
  std::string out;
  {
    JsonWriter w(out);
    w.begin_object();
    w.known_key("agent_id").value(b.agent_id);
    w.known_key("seq").quoted(e.seq);
    w.known_key("schema").value(e.schema);
    w.known_key("reason").value(why.code);
    w.known_key("message").value(why.message);
    w.known_key("gateway_id").value(gateway_id);
    w.known_key("received_at").quoted(received_at);
    w.known_key("collected_at").quoted(e.collected_at);
    if (withhold) {
      std::string scratch;
      w.known_key("payload_withheld").value(true);
      w.known_key("payload_sha256")
          .value(tls::sha256_hex(proto::payload_bytes(e.bytes, scratch, nullptr)));
    } else {
      w.known_key("event_b64").value(proto::base64(e.bytes));
      std::string rendered;
      proto::append_event_json(rendered, e.bytes, b.agent_id);
      w.known_key("event").raw(rendered);
    }
    w.end_object();
  }
  return out;
}

}  // namespace

ValidationStage::ValidationStage(std::string gateway_id, ValidationConfig config,
                                 const Clock& clock)
    : gateway_id_(std::move(gateway_id)), config_(std::move(config)), clock_(clock) {}
ValidationStage::~ValidationStage() = default;

Result<std::unique_ptr<ValidationStage>> ValidationStage::start(std::string gateway_id,
                                                                ValidationConfig config,
                                                                const Clock& clock) {
  std::unique_ptr<ValidationStage> stage(
      new ValidationStage(std::move(gateway_id), std::move(config), clock));
  auto v = stage->load();
  if (!v) return v.error();
  stage->validator_ = std::move(*v);
  return stage;
}

Result<std::shared_ptr<const proto::Validator>> ValidationStage::load() const {
  return proto::load_validator(config_);
}

std::shared_ptr<const proto::Validator> ValidationStage::current() const {
  std::lock_guard lock(mu_);
  return validator_;
}

Result<std::string> ValidationStage::reload() {
  auto v = load();
  {
    std::lock_guard lock(mu_);
    if (!v) {
      ++reloads_failed_;
      return v.error();
    }
    validator_ = std::move(*v);
    ++reloads_ok_;
  }
  return describe();
}

std::string ValidationStage::describe() const {
  auto v = current();
  if (!v) return "no contracts (contracts.descriptor_set is not set): events are not validated";
  std::string names;
  for (const auto& [schema, message] : v->registry().schemas()) {
    names += (names.empty() ? "" : ", ") + schema + " (" + message + ")";
  }
  return std::to_string(v->registry().schemas().size()) + " schemas from " + v->registry().path() +
         " (sha256 " + v->registry().fingerprint().substr(0, 16) + "): " + names;
}

void ValidationStage::apply(SinkBatch& batch) const {
  const auto validator = current();
  const int64_t started = clock_.mono_ns();
  const int64_t received_at = clock_.now_ns();
  // This batch's counts, merged under the lock once: (schema label, reason) -> count. The
  // labels are views into the validator's contracts, the reasons static names; a batch has
  // few distinct ones.
  struct Tally {
    std::string_view schema, reason;
    Count count;
  };
  std::vector<Tally> tallies;
  auto tally = [&](std::string_view schema, std::string_view reason) -> Count& {
    for (Tally& t : tallies) {
      if (t.schema == schema && t.reason == reason) return t.count;
    }
    return tallies.push_back({schema, reason, {}}), tallies.back().count;
  };
  wire::EventList out;
  size_t total = 0;
  for (const wire::EventView e : batch.events) total += e.bytes.size() + 160;
  std::string& chunk = out.open_chunk(total);
  std::string scratch;
  for (const wire::EventView e : batch.events) {
    proto::Verdict v;
    if (validator) v = validator->check(e.bytes, e.schema);
    const std::string_view label = v.contract.empty() ? kUnknownLabel : v.contract;
    const size_t offset = chunk.size();
    if (v.bad) {
      if (batch.dead_letters.empty()) batch.dead_letters.resize(batch.events.size());
      batch.dead_letters[e.index] =
          dead_letter(batch, e, *v.bad, gateway_id_, received_at, validator->sensitive(e.schema));
      Count& c = tally(label, v.bad->code);  // a static name
      ++c.events;
      c.bytes += e.bytes.size();
      chunk.append(e.bytes);
      const size_t schema_at = static_cast<size_t>(e.schema.data() - e.bytes.data());
      out.add_rewritten(offset, e.bytes.size(), {schema_at, e.schema.size()}, e);
      continue;
    }
    uint32_t field = v.payload_field;
    std::string_view payload = v.payload;
    if (field == 0) {
      payload = !v.contract.empty() ? v.original : proto::payload_bytes(e.bytes, scratch, nullptr);
    }
    Count& c = tally(label, {});
    ++c.events;
    c.bytes += payload.size();
    char digest[64];
    tls::sha256_hex(payload, digest);
    proto::ProvenanceFields p;
    p.gateway_id = gateway_id_;
    p.received_at = received_at;
    p.contract = v.contract;
    p.contract_fingerprint = v.fingerprint;
    p.payload_sha256 = std::string_view(digest, sizeof digest);
    p.relay_id = batch.relayed_by;
    auto schema = proto::append_with_provenance(chunk, e.bytes, field, v.payload, p);
    out.add_rewritten(offset, chunk.size() - offset, schema, e);
  }
  batch.events = std::move(out);
  const double seconds = static_cast<double>(clock_.mono_ns() - started) / 1e9;
  std::lock_guard lock(mu_);
  for (const Tally& t : tallies) {
    Count& sum = counts_[{std::string(t.schema), std::string(t.reason)}];
    sum.events += t.count.events;
    sum.bytes += t.count.bytes;
  }
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) ++bucket_counts_[i];
  }
  ++seconds_count_;
  seconds_sum_ += seconds;
}

void ValidationStage::append_metrics(std::string& out) const {
  std::lock_guard lock(mu_);
  out +=
      "# HELP outpost_gateway_contract_events_total Events checked against their contracts, "
      "by schema (\"unknown\" for one the set has not), result and reason (resent batches "
      "count again).\n# TYPE outpost_gateway_contract_events_total counter\n";
  for (const auto& [key, c] : counts_) {
    out += "outpost_gateway_contract_events_total{schema=\"" + key.first + "\",result=\"" +
           (key.second.empty() ? "good" : "bad") + "\",reason=\"" +
           (key.second.empty() ? "none" : key.second) + "\"} " + std::to_string(c.events) + "\n";
  }
  out +=
      "# HELP outpost_gateway_contract_bytes_total Payload bytes checked, by schema.\n"
      "# TYPE outpost_gateway_contract_bytes_total counter\n";
  std::map<std::string, uint64_t> bytes;
  for (const auto& [key, c] : counts_) bytes[key.first] += c.bytes;
  for (const auto& [schema, n] : bytes) {
    out += "outpost_gateway_contract_bytes_total{schema=\"" + schema + "\"} " + std::to_string(n) +
           "\n";
  }
  out +=
      "# HELP outpost_gateway_validation_seconds Time to check and stamp one batch.\n"
      "# TYPE outpost_gateway_validation_seconds histogram\n";
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    std::ostringstream le;
    le << kBuckets[i];
    out += "outpost_gateway_validation_seconds_bucket{le=\"" + le.str() + "\"} " +
           std::to_string(bucket_counts_[i]) + "\n";
  }
  out += "outpost_gateway_validation_seconds_bucket{le=\"+Inf\"} " +
         std::to_string(seconds_count_) + "\n";
  out += "outpost_gateway_validation_seconds_sum " + std::to_string(seconds_sum_) + "\n";
  out += "outpost_gateway_validation_seconds_count " + std::to_string(seconds_count_) + "\n";
  out +=
      "# HELP outpost_gateway_contract_reloads_total Reloads of the contracts (SIGHUP), by "
      "result.\n# TYPE outpost_gateway_contract_reloads_total counter\n"
      "outpost_gateway_contract_reloads_total{result=\"ok\"} " +
      std::to_string(reloads_ok_) + "\noutpost_gateway_contract_reloads_total{result=\"failed\"} " +
      std::to_string(reloads_failed_) + "\n";
}

}  // namespace outpost::gateway
