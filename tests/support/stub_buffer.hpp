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
  Result<std::vector<agent::StoredEvent>> read_batch(uint64_t, size_t, size_t) override {
    return std::vector<agent::StoredEvent>{};
  }
  Result<size_t> visit_batch(uint64_t, size_t, size_t, const agent::EventVisitor&) override {
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
