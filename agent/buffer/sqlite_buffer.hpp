#pragma once
// SqliteBuffer: the Buffer on a SQLite file in WAL mode (schema: docs/buffer.md).
//
// One writer thread owns the write connection and does group commit; the forwarder's reads
// use a second connection. Other processes (`outpost-agent buffer import/purge`) may write
// the same file: the writer notices their commits (PRAGMA data_version) and reloads its
// counters, so sequence numbers stay unique.
//
// Thread-safety: every method may be called from any thread. The Clock passed to open() must
// outlive the buffer.

#include <memory>
#include <optional>

#include "agent/buffer/buffer.hpp"
#include "common/clock.hpp"

namespace outpost::agent {

class SqliteBuffer final : public Buffer {
 public:
  // Opens or creates the buffer. A corrupt file is moved aside as
  // "<path>.corrupt-<UTC timestamp>" (if options.recover_corrupt) and a fresh buffer starts;
  // a file of a newer schema version is refused (buffer_errc::newer_schema).
  static Result<std::unique_ptr<SqliteBuffer>> open(BufferOptions options, const Clock& clock);
  // The lock file an exclusive buffer (BufferOptions::exclusive) holds with its pid.
  static std::string lock_path(const std::string& buffer_path) { return buffer_path + ".lock"; }

  ~SqliteBuffer() override;
  SqliteBuffer(const SqliteBuffer&) = delete;
  SqliteBuffer& operator=(const SqliteBuffer&) = delete;

  using Buffer::append;
  void append(std::vector<NewEvent> events, AppendCallback done, Commit when = Commit::grouped,
              Acceptance acceptance = Acceptance::given) override;
  void append_with_progress(std::vector<NewEvent> events, SourceProgress progress,
                            AppendCallback done) override;
  Result<std::vector<SourceProgress>> read_progress(std::string_view prefix) override;
  Result<void> erase_progress(std::string_view key) override;
  Result<std::vector<StoredEvent>> read_batch(uint64_t after_seq, size_t max_events,
                                              size_t max_bytes) override;
  Result<size_t> visit_batch(uint64_t after_seq, size_t max_events, size_t max_bytes,
                             const EventVisitor& visit) override;
  Result<size_t> visit_lane(uint64_t after_seq, size_t max_events, size_t max_bytes,
                            const LaneFilter& in_lane, const EventVisitor& visit,
                            uint64_t& scanned) override;
  Result<void> ack(uint64_t up_to_seq) override;
  std::future<Result<void>> ack_async(uint64_t up_to_seq) override;
  // Cheap: counts by kind from memory, oldest pending event from one indexed read. `groups`
  // (by kind and priority) is left empty; BufferInspector::stats() fills it.
  Result<BufferStats> stats() override;
  Result<void> quarantine(QuarantineEntry entry) override;
  bool healthy() const override;
  std::optional<std::string> refusal_reason() const override;

  // Deletes pending events of `kind` (all kinds if empty) collected before
  // `collected_before_ns` (no age limit if empty); counted as dropped, reason `purged`.
  // Returns how many were deleted.
  Result<uint64_t> purge(std::optional<EventKind> kind, std::optional<int64_t> collected_before_ns);

  // Enforces every kind's max_age now instead of at the next expire_interval tick.
  Result<void> expire_now();

  // Appends waiting for the writer (a bounded queue; this is its depth).
  size_t queued_events() const;

 private:
  struct Impl;
  explicit SqliteBuffer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::agent
