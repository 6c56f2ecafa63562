#include "agent/contracts/edge_validation.hpp"

#include "proto/event_view.hpp"

namespace outpost::agent {

EdgeValidatingBuffer::EdgeValidatingBuffer(Buffer& inner,
                                           std::shared_ptr<const proto::Validator> validator)
    : inner_(inner), validator_(std::move(validator)) {}

Result<std::vector<NewEvent>> EdgeValidatingBuffer::keep_good(std::vector<NewEvent>& events) {
  std::vector<NewEvent> good;
  good.reserve(events.size());
  for (NewEvent& e : events) {
    auto head = proto::check_event(e.body);
    std::string schema = head ? std::string(head->schema) : std::string();
    proto::Verdict v =
        head ? validator_->check(e.body, schema)
             : proto::Verdict{
                   proto::Rejection{"not_an_event", head.error().message}, {}, {}, 0, {}, {}};
    if (v.bad) {
      std::string scratch;
      const std::string_view payload = proto::payload_bytes(e.body, scratch, nullptr);
      const std::string label = validator_->knows(schema) ? schema : "unknown";
      const std::string code(v.bad->code);
      // Kept on the device with its reason; quarantine() returns once it is durable.
      auto kept = inner_.quarantine(
          QuarantineEntry{"contracts", schema, code + ": " + v.bad->message, std::string(payload)});
      // Neither quarantined nor stored: the whole append is refused, as the buffer refuses one
      // (all or nothing), so that the source tells its client instead of losing it.
      if (!kept) return kept.error();
      std::lock_guard lock(mu_);
      ++quarantined_[{label, code}];
      continue;
    }
    if (v.payload_field != 0) {  // sensitive fields applied before the event is stored
      std::string body;
      proto::append_with_provenance(body, e.body, v.payload_field, v.payload, {});
      e.body = std::move(body);
    }
    good.push_back(std::move(e));
  }
  std::lock_guard lock(mu_);
  good_ += good.size();
  return good;
}

void EdgeValidatingBuffer::append(std::vector<NewEvent> events, AppendCallback done, Commit when,
                                  Acceptance acceptance) {
  auto good = keep_good(events);
  if (!good) {
    done(good.error());
    return;
  }
  if (good->empty()) {
    done(AppendResult{});  // everything went to the quarantine
    return;
  }
  inner_.append(std::move(*good), std::move(done), when, acceptance);
}

void EdgeValidatingBuffer::append_with_progress(std::vector<NewEvent> events,
                                                SourceProgress progress, AppendCallback done) {
  auto good = keep_good(events);
  if (!good) {
    done(good.error());
    return;
  }
  // Even with nothing left to store, the progress is (the file's quarantined lines are done).
  inner_.append_with_progress(std::move(*good), std::move(progress), std::move(done));
}

void EdgeValidatingBuffer::append_metrics(std::string& out) const {
  std::lock_guard lock(mu_);
  out +=
      "# HELP outpost_agent_contract_quarantined_total Events that failed their contract at the "
      "edge and went to the quarantine table, by schema and reason.\n"
      "# TYPE outpost_agent_contract_quarantined_total counter\n";
  for (const auto& [key, n] : quarantined_) {
    out += "outpost_agent_contract_quarantined_total{schema=\"" + key.first + "\",reason=\"" +
           key.second + "\"} " + std::to_string(n) + "\n";
  }
  out +=
      "# HELP outpost_agent_contract_valid_total Events that passed their contract at the edge.\n"
      "# TYPE outpost_agent_contract_valid_total counter\noutpost_agent_contract_valid_total " +
      std::to_string(good_) + "\n";
}

}  // namespace outpost::agent
