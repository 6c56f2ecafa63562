#pragma once
// The embedded default sink: events as zstd-compressed NDJSON (or length-delimited protobuf)
// files under DIR/<kind>/dt=YYYY-MM-DD/hour=HH/ (the gateway's clock when the file was
// opened, UTC), rotated by size and age; bad events (the validation stage's dead letters) as
// NDJSON under DIR/bad/ the same way. docs/gateway.md, "File sink", specifies the layout
// and the state log.
//
// Durability: batches are written in groups; each group appends one zstd frame per kind
// file, fsyncs the files, then appends the new high-water marks and the files' committed
// sizes to DIR/_outpost/state.log and fsyncs that; only then do the callbacks run. At open,
// files are cut back to their last committed size, so a crash never leaves half a group
// that the agent (which was not acked) would send again.
//
// Thread-safety: see Sink. One writer thread; the destructor finishes queued batches.

#include <memory>
#include <string>

#include "common/clock.hpp"
#include "gateway/sinks/sink.hpp"

namespace outpost::gateway {

struct FileSinkOptions {
  std::string dir;
  uint64_t rotate_bytes = 64ULL << 20;
  int64_t rotate_age_ns = 300'000'000'000;  // 5 minutes
  bool protobuf = false;                    // length-delimited Event instead of NDJSON
  int zstd_level = 1;
  size_t queue_max_batches = 4096;  // beyond this, write() fails at once (retry-later)
  size_t group_max_events = 50'000;
};

class FileSink : public Sink {
 public:
  static Result<std::unique_ptr<FileSink>> open(FileSinkOptions options, const Clock& clock);
  // The lock file the sink of directory `dir` holds while it runs (with its pid).
  static std::string lock_path(const std::string& dir);
  ~FileSink() override;

  void write(SinkBatch batch, SinkCallback done) override;
  std::optional<std::string> not_ready_reason() const override;
  void session_started(const std::string& agent_id) override;
  // New rotation thresholds (a configuration reload), from the files' next look.
  void set_rotation(uint64_t rotate_bytes, int64_t rotate_age_ns);
  // The agent's high-water mark as committed (tests, metrics).
  uint64_t high_water(const std::string& agent_id) const;

 private:
  struct Impl;
  explicit FileSink(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::gateway
