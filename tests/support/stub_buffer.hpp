#pragma once
// A Buffer whose every method succeeds and does nothing: a test derives from it and overrides
// what it is about (append, quarantine), instead of writing out the whole interface again.
#include <future>
#include <optional>
#include <string>
#include <vector>

#include "agent/buffer/buffer.hpp"

namespace outpost::test {

class StubBuffer : public agent::Buffer {
 public:
  // What a spool source stores with its events goes through append(), unless overridden.
  void append_with_progress(std::vector<NewEvent> events, agent::SourceProgress,
                            agent::AppendCallback done) override {
    append(std::move(events), std::move(done), agent::Commit::now, agent::Acceptance::on_commit);
  }
  Result<std::vector<agent::SourceProgress>> read_progress(std::string_view) override {
    return std::vector<agent::SourceProgress>{};
  }
  Result<void> erase_progress(std::string_view) override { return {}; }
  Result<std::vector<agent::StoredEvent>> read_batch(uint64_t, size_t, size_t) override {
    return std::vector<agent::StoredEvent>{};
  }
  Result<size_t> visit_batch(uint64_t, size_t, size_t, const agent::EventVisitor&) override {
    return size_t{0};
  }
  Result<size_t> visit_lane(uint64_t, size_t, size_t, const agent::LaneFilter&,
                            const agent::EventVisitor&, uint64_t&) override {
    return size_t{0};
  }
  Result<void> ack(uint64_t) override { return {}; }
  std::future<Result<void>> ack_async(uint64_t) override {
    std::promise<Result<void>> p;
    p.set_value(Result<void>());
    return p.get_future();
  }
  Result<agent::BufferStats> stats() override { return agent::BufferStats{}; }
  Result<void> quarantine(agent::QuarantineEntry) override { return {}; }
  bool healthy() const override { return true; }
  std::optional<std::string> refusal_reason() const override { return std::nullopt; }
};

}  // namespace outpost::test
