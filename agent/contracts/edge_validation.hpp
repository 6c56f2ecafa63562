#pragma once
// Edge validation (`[contracts] validate = "edge"`, docs/contracts.md, "Edge validation"): a
// Buffer in front of the agent's buffer that checks every event against its contract before
// it is stored. A good event is stored with its sensitive fields applied, so the raw value
// never leaves the device; a bad one goes to the buffer's quarantine table with its reason
// code and message (`outpost-agent buffer quarantine` shows it) and is counted by schema and
// reason. The source's acceptance covers both: what it handed over is stored or quarantined,
// never silently dropped; when the quarantine cannot keep a bad event (the disk is full), the
// append is refused whole, as the buffer refuses one, and the source answers its client so.
//
// Thread-safety: as Buffer; the counters under a mutex.

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "agent/buffer/buffer.hpp"
#include "proto/validator.hpp"

namespace outpost::agent {

class EdgeValidatingBuffer final : public Buffer {
 public:
  EdgeValidatingBuffer(Buffer& inner, std::shared_ptr<const proto::Validator> validator);

  void append(std::vector<NewEvent> events, AppendCallback done, Commit when = Commit::grouped,
              Acceptance acceptance = Acceptance::given) override;
  void append_with_progress(std::vector<NewEvent> events, SourceProgress progress,
                            AppendCallback done) override;
  Result<std::vector<SourceProgress>> read_progress(std::string_view prefix) override {
    return inner_.read_progress(prefix);
  }
  Result<void> erase_progress(std::string_view key) override { return inner_.erase_progress(key); }
  Result<std::vector<StoredEvent>> read_batch(uint64_t after_seq, size_t max_events,
                                              size_t max_bytes) override {
    return inner_.read_batch(after_seq, max_events, max_bytes);
  }
  Result<size_t> visit_batch(uint64_t after_seq, size_t max_events, size_t max_bytes,
                             const EventVisitor& visit) override {
    return inner_.visit_batch(after_seq, max_events, max_bytes, visit);
  }
  Result<size_t> visit_lane(uint64_t after_seq, size_t max_events, size_t max_bytes,
                            const LaneFilter& in_lane, const EventVisitor& visit,
                            uint64_t& scanned) override {
    return inner_.visit_lane(after_seq, max_events, max_bytes, in_lane, visit, scanned);
  }
  Result<void> ack(uint64_t up_to_seq) override { return inner_.ack(up_to_seq); }
  std::future<Result<void>> ack_async(uint64_t up_to_seq) override {
    return inner_.ack_async(up_to_seq);
  }
  Result<BufferStats> stats() override { return inner_.stats(); }
  Result<void> quarantine(QuarantineEntry entry) override {
    return inner_.quarantine(std::move(entry));
  }
  bool healthy() const override { return inner_.healthy(); }
  std::optional<std::string> refusal_reason() const override { return inner_.refusal_reason(); }

  // outpost_agent_contract_quarantined_total{schema,reason}, as Prometheus text.
  void append_metrics(std::string& out) const;

 private:
  // The events that pass their contracts; the others are quarantined (an error: one could not
  // be, and nothing of the append may be stored).
  Result<std::vector<NewEvent>> keep_good(std::vector<NewEvent>& events);

  Buffer& inner_;
  std::shared_ptr<const proto::Validator> validator_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, uint64_t> quarantined_;  // (schema, reason)
  uint64_t good_ = 0;
};

}  // namespace outpost::agent
