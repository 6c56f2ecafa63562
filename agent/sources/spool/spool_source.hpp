#pragma once
// The spool-directory source (docs/sources.md, "Spool directory"): producers drop files into a
// directory atomically (write elsewhere or under a name starting with '.', then rename in);
// the source reads each file into events (spool_reader.hpp) and stores them in the buffer.
//
// Exactly once across kills: a file is known by its identity (device, inode, size, mtime), and
// where the source got to in it (the offset after its last stored event) is stored in the
// buffer's database in the same transaction as those events (Buffer::append_with_progress).
// After a kill the source resumes at that offset. A file is checked whole before its first
// event is stored, so a malformed file stores nothing: it goes to `failed/` with a `.reason`
// file beside it and is counted, never retried. A finished file goes to `done/` (or is
// deleted), and then its progress row is removed. While the buffer refuses (full under
// `reject`, the disk full) the source waits and tries the same events again: it never drops.
//
// It watches the directory with inotify and rescans it every rescan_interval as well (a
// missed event, a file system without inotify).
//
// Thread-safety: start() and the destructor from the owning thread; counters() and
// append_metrics() from any. The Buffer outlives the SpoolSource. Events carry the file's
// mtime as their event_time.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "agent/buffer/buffer.hpp"
#include "agent/sources/spool/spool_reader.hpp"
#include "common/result.hpp"

namespace outpost::agent {

struct SpoolSourceOptions {
  std::string directory;
  SpoolFormat format = SpoolFormat::automatic;
  std::string schema;  // the contract the events are checked against, e.g. "order.v1"
  int32_t priority = 0;
  bool delete_done = false;  // false: finished files move to done/
  SpoolLimits limits;
  int64_t rescan_interval_ns = 10'000'000'000;
  uint32_t batch_events = 1000;          // events per buffer transaction...
  uint64_t batch_bytes = 1u << 20;       // ...and bytes
  int64_t retry_min_ns = 50'000'000;     // waiting while the buffer refuses: from this...
  int64_t retry_max_ns = 2'000'000'000;  // ...doubling up to this
  bool operator==(const SpoolSourceOptions&) const = default;
};

struct SpoolSourceCounters {
  std::atomic<uint64_t> files_done{0};
  std::atomic<uint64_t> files_failed{0};
  std::atomic<uint64_t> events{0};         // stored
  std::atomic<uint64_t> bytes{0};          // of the files, as read
  std::atomic<uint64_t> waits{0};          // times the buffer refused and the source waited
  std::atomic<uint64_t> pending_files{0};  // in the directory at the last scan
};

class SpoolSource {
 public:
  // Creates done/ and failed/ in the directory, and starts the source's thread. An error when
  // the directory cannot be used.
  static Result<std::unique_ptr<SpoolSource>> start(SpoolSourceOptions options, Buffer& buffer);
  ~SpoolSource();  // stops after the transaction in progress
  SpoolSource(const SpoolSource&) = delete;
  SpoolSource& operator=(const SpoolSource&) = delete;

  const SpoolSourceCounters& counters() const;
  // outpost_agent_spool_* series, as Prometheus text.
  void append_metrics(std::string& out) const;

  struct Impl;

 private:
  explicit SpoolSource(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::agent
