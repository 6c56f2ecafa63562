#pragma once
// BufferInspector: a read-only view of a buffer file for operators' tools
// (`outpost-agent buffer stats|peek|export|verify`). It opens the file read-only, so it is
// safe while the agent writes: each call reads one consistent snapshot (WAL readers never
// block the writer).
//
// Thread-safety: one thread at a time.

#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>

#include "agent/buffer/buffer.hpp"

namespace outpost::agent {

struct ScanFilter {
  std::optional<EventKind> kind;
  uint64_t after_seq = 0;  // events with seq > after_seq
  size_t limit = std::numeric_limits<size_t>::max();
  // Sealed events (docs/buffer.md, "Encryption at rest") are opened with the keys given to
  // use_keys(); an event it cannot open is an error naming it. false: bodies as stored.
  bool open_sealed = true;
};

struct Verdict {
  bool ok = false;
  std::string detail;  // "ok", or what SQLite found
};

class BufferInspector {
 public:
  // buffer_errc::not_found when the file does not exist; io when it cannot be read.
  static Result<BufferInspector> open(const std::string& path);

  BufferInspector(BufferInspector&&) noexcept;
  BufferInspector& operator=(BufferInspector&&) noexcept;
  ~BufferInspector();

  // The keys sealed events are opened with (buffer.key_file, buffer.old_key_files).
  void use_keys(const BufferEncryption& encryption);

  // Every figure, from a full scan (by kind and priority, with event times).
  Result<BufferStats> stats();
  // Calls `visit` for matching events in seq order until it returns false; returns the count.
  Result<size_t> scan(const ScanFilter& filter,
                      const std::function<bool(const StoredEvent&)>& visit);
  // The newest quarantined messages, newest first.
  Result<std::vector<QuarantinedMessage>> quarantine(size_t limit);
  // PRAGMA integrity_check. A damaged file is a Verdict with ok=false, not an Error.
  Result<Verdict> verify();
  // The agent id recorded in the file ("" if unreadable).
  std::string agent_id();

 private:
  struct Impl;
  explicit BufferInspector(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::agent
