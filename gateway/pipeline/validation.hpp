#pragma once
// The gateway's validation stage (docs/contracts.md, "Validation"; docs/gateway.md,
// "Provenance"): between the protocol and the sink, every event of a batch is checked against
// its contract (proto/validator.hpp), a good one gets its sensitive fields applied and its
// provenance stamped, a bad one gets its dead-letter record (DecodedBatch::dead_letters). The
// sink then writes each where it belongs, in the same commit as the batch's mark, so that bad
// events are accepted and routed exactly once like good ones, never retried for ever.
//
// The contracts are read at start and again on reload() (SIGHUP): a set that cannot be used
// is refused and the one in use stays.
//
// Thread-safety: apply() from any thread (the sessions' threads); reload() from one.

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/clock.hpp"
#include "common/result.hpp"
#include "gateway/sinks/sink.hpp"
#include "proto/contracts_config.hpp"

namespace outpost::gateway {

// No descriptor set: events are stamped but not validated.
using ValidationConfig = proto::ContractsConfig;

class ValidationStage {
 public:
  static Result<std::unique_ptr<ValidationStage>> start(std::string gateway_id,
                                                        ValidationConfig config,
                                                        const Clock& clock);
  ~ValidationStage();

  // Reads the descriptor set and the key file again. On success the next batch is checked
  // against the new contracts, and the text says what is loaded; on error nothing changes.
  Result<std::string> reload();
  // What is loaded: "N schemas from PATH (sha256 …): a (A), b (B)", or "no contracts".
  std::string describe() const;

  // Checks and stamps the batch's events, in place.
  void apply(SinkBatch& batch) const;
  void append_metrics(std::string& out) const;

 private:
  ValidationStage(std::string gateway_id, ValidationConfig config, const Clock& clock);
  Result<std::shared_ptr<const proto::Validator>> load() const;
  std::shared_ptr<const proto::Validator> current() const;

  const std::string gateway_id_;
  const ValidationConfig config_;
  const Clock& clock_;
  mutable std::mutex mu_;  // guards everything below
  std::shared_ptr<const proto::Validator> validator_;
  struct Count {
    uint64_t events = 0;
    uint64_t bytes = 0;
  };
  // (schema label, reason: "" for good) -> counts.
  mutable std::map<std::pair<std::string, std::string>, Count> counts_;
  static constexpr std::array<double, 8> kBuckets = {0.0001, 0.00025, 0.0005, 0.001,
                                                     0.0025, 0.005,   0.01,   0.05};
  mutable std::array<uint64_t, kBuckets.size()> bucket_counts_{};
  mutable uint64_t seconds_count_ = 0;
  mutable double seconds_sum_ = 0;
  uint64_t reloads_ok_ = 0, reloads_failed_ = 0;
};

}  // namespace outpost::gateway
