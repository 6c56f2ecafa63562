#pragma once
// The agent's store-and-forward buffer: the only place the agent keeps events between a
// source accepting them and the gateway acknowledging them. Schema and guarantees:
// docs/buffer.md.
//
// Producers (sources) call append() from any thread; it never blocks on the disk. A single
// writer thread owned by the implementation commits queued appends in groups, and calls each
// producer's callback once *its* events are durable (or were refused). The forwarder calls
// read_batch() and ack() from its own thread. stats() may be called from any thread.
//
// The Buffer must outlive every producer and the forwarder; destroying it finishes the
// queued appends (their callbacks run) before it returns.

#include <array>
#include <cstdint>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "common/event.hpp"
#include "common/result.hpp"
#include "common/tls/aead.hpp"

namespace outpost::agent {

enum class buffer_errc {
  full = 1,      // the byte cap is reached and the kind's policy is `reject`
  disk_full,     // SQLITE_FULL / ENOSPC: nothing of this append was stored
  queue_full,    // too many appends wait for the writer; try again shortly
  closed,        // the buffer is shutting down
  corrupt,       // the file is damaged (at open it is moved aside; later the agent restarts)
  newer_schema,  // the file was written by a newer outpost-agent
  io,            // any other SQLite / file-system failure
  not_found,     // the buffer file does not exist (read-only tools)
  busy,          // another process holds the write lock for too long
  key_missing,   // pending events are sealed with a key that was not given (buffer.key_file)
};
const std::error_category& buffer_category();
inline std::error_code make_error_code(buffer_errc e) {
  return {static_cast<int>(e), buffer_category()};
}

enum class FullPolicy { reject, drop_oldest };

struct KindLimits {
  FullPolicy policy = FullPolicy::reject;
  int64_t max_age_ns = 0;  // 0: events wait for the gateway however long it takes
};

enum class Synchronous { off, normal, full, extra };  // SQLite's PRAGMA synchronous

// Encryption at rest (docs/buffer.md, "Encryption at rest"; agent/buffer/row_seal.hpp).
struct BufferEncryption {
  bool seal = false;  // encryption = "aead": new rows are sealed with keys[0]
  tls::AeadCipher cipher = tls::AeadCipher::chacha20_poly1305;
  std::vector<tls::AeadKey> keys;  // keys[0] seals (when `seal`); each one opens its rows
};

struct BufferOptions {
  std::string path;
  std::string agent_id;
  uint64_t max_bytes = 1ULL << 30;  // cap on stored event bytes (sum of bodies)
  // Hard limit on the database file (PRAGMA max_page_count); 0: only the disk limits it.
  // Reaching it behaves like a full disk.
  uint64_t max_file_bytes = 0;
  // Space kept in "<path>.reserve" and released when the disk fills up, so that acks (which
  // also need to write) can still free space. Re-created once the disk has room again.
  uint64_t disk_reserve_bytes = 4ULL << 20;
  std::array<KindLimits, kKindCount> kinds{};  // indexed by kind_index()
  Synchronous synchronous = Synchronous::full;
  uint32_t commit_max_events = 1000;           // a group commit starts when this many wait...
  int64_t commit_interval_ns = 5'000'000;      // ...or when the oldest has waited this long
  uint32_t queue_max_events = 100'000;         // appends waiting for the writer (bounded)
  int64_t expire_interval_ns = 1'000'000'000;  // how often max_age is enforced
  // Events are stored in tables of 2^segment_shift seqs each, dropped whole once acknowledged
  // (docs/buffer.md). Applies to new files; an existing file keeps the value it was made with.
  unsigned segment_shift = 14;
  // At open, a file that fails PRAGMA quick_check is moved aside and a fresh buffer starts.
  // Tools that must not do that behind the agent's back (buffer purge/import) set false.
  bool recover_corrupt = true;
  // `outpost-agent run`: hold an exclusive lock on "<path>.lock" for the buffer's life, so that
  // a second agent on the same file is refused (naming the holder's pid). The operators'
  // tools (import, purge) write beside a running agent by design and do not take it.
  bool exclusive = false;
  // How many event identities (NewEvent::identity) are remembered for de-duplication.
  uint32_t identity_window = 4096;
  // The quarantine table keeps the newest quarantine_max_rows messages a source could not
  // turn into events, each with at most quarantine_keep_bytes of its payload.
  uint32_t quarantine_max_rows = 1000;
  uint32_t quarantine_keep_bytes = 4096;
  BufferEncryption encryption;
  // At open, refuse a file whose pending events are sealed with a key not in `encryption`
  // (the agent could not forward them). `buffer purge`, which reads no bodies, sets false.
  bool require_keys = true;
};

// Seqs [first_seq, last_seq] were assigned to the events of one append, in order.
// An empty range (last_seq < first_seq) when every event was a known duplicate.
// Events that came with their own seq (NewEvent::seq) are not in the range: kept_seqs of them
// were stored under it, skipped were not (at or below acked_seq, or already present: an
// import of the same salvage twice stores nothing twice).
struct AppendResult {
  uint64_t first_seq = 0;
  uint64_t last_seq = 0;
  uint32_t duplicates = 0;  // events not stored: their identity was already stored
  uint32_t kept_seqs = 0;
  uint32_t skipped = 0;
};

// A message a source received but could not turn into an event (docs/buffer.md).
struct QuarantineEntry {
  std::string source;   // "mqtt"
  std::string subject;  // where it came from: the MQTT topic
  std::string reason;   // why it is here, for a person
  std::string payload;  // as received; the buffer keeps the first quarantine_keep_bytes
};

struct QuarantinedMessage {
  int64_t id = 0;
  int64_t at_ns = 0;
  std::string source, subject, reason;
  uint64_t size = 0;    // of the payload as received
  std::string payload;  // possibly cut to quarantine_keep_bytes
};
using AppendCallback = std::function<void(const Result<AppendResult>&)>;

// Where a source that reads files got to (the spool source: a file's identity, and the offset
// after its last stored event). Kept in the buffer's database so that it commits with the
// events it describes (docs/buffer.md, "Source progress").
struct SourceProgress {
  std::string key;
  std::string value;
};

// An event as stored. StoredEvent owns its body; StoredEventRef, what visit_batch shows,
// points into the reader's row and is valid only during the visit.
template <typename Body>
struct BasicStoredEvent {
  uint64_t seq = 0;
  EventKind kind = EventKind::json;
  int32_t priority = 0;
  int64_t event_time_ns = 0;
  int64_t collected_at_ns = 0;
  Body body;  // outpost.v1.Event without agent_id, seq, collected_at
};
using StoredEvent = BasicStoredEvent<std::string>;
using StoredEventRef = BasicStoredEvent<std::string_view>;
// False: the event is not taken, and the batch ends before it (the forwarder keeps one
// device's events per batch).
using EventVisitor = std::function<bool(const StoredEventRef&)>;
// Whether an event of this kind and priority is in a lane (Buffer::visit_lane).
using LaneFilter = std::function<bool(EventKind kind, int32_t priority)>;

// Why events left the buffer without an ack, or never entered it although their source had
// already told its client they were taken (Acceptance). Names are stable: they appear in
// metrics, `buffer stats` and the drops table.
enum class DropReason {
  rejected_full,  // the byte cap, policy `reject`
  evicted_full,   // the byte cap, policy `drop_oldest`: older events made room
  expired,        // max_age
  purged,         // `outpost-agent buffer purge`
  disk_full,      // the disk (or max_file_bytes) is full, or below the floor kept for acks
  queue_full,     // more than queue_max_events waited for the writer
  closed,         // appended while the buffer was shutting down
  write_failed,   // any other failure of the append's transaction (I/O error, corruption)
  corrupt,        // pending in a file moved aside as corrupt and not salvaged into the new one
  tampered,       // a sealed row whose tag does not verify: quarantined, never forwarded
};
inline constexpr int kDropReasonCount = 10;

// What the source has told its client by the time it calls append(), which decides whether a
// refusal is a loss that the buffer must count (docs/buffer.md, "Every acceptance counted"):
//   given           already told "taken" (a pixel served, a PUBACK): every refusal is counted
//                   as dropped, by reason;
//   unless_refused  told "taken" only if append() does not refuse at once (a 202 for a POST
//                   without ?sync): a refusal inside append() is the source's to answer (503)
//                   and is not counted; a refusal after append() returned is;
//   on_commit       told only after the commit (?sync=true: 201 or 503): nothing is counted.
enum class Acceptance { given, unless_refused, on_commit };
std::string_view drop_reason_name(DropReason r);
// The reason of a name drop_reason_name() gave (the drops tables store names); nullopt for a
// name this version does not know.
std::optional<DropReason> drop_reason_from_name(std::string_view name);

struct GroupStats {
  EventKind kind = EventKind::json;
  int32_t priority = 0;
  uint64_t events = 0;
  uint64_t bytes = 0;
  int64_t oldest_event_time_ns = 0;
  int64_t newest_event_time_ns = 0;
};

struct DropCount {
  DropReason reason = DropReason::rejected_full;
  EventKind kind = EventKind::json;
  uint64_t count = 0;
};

// Drops of a relaying agent's device's events (agent/relay/), by the device they belong to.
struct OriginDropCount {
  std::string agent_id;
  DropReason reason = DropReason::expired;
  uint64_t count = 0;
};

struct BufferStats {
  std::string agent_id;
  uint32_t schema_version = 0;
  uint64_t pending_events = 0;
  uint64_t pending_bytes = 0;
  std::vector<GroupStats> groups;  // by kind and priority
  std::optional<int64_t> oldest_event_time_ns;
  std::optional<int64_t> newest_event_time_ns;
  std::optional<int64_t> oldest_collected_at_ns;
  uint64_t acked_seq = 0;  // every seq <= acked_seq has left the buffer
  uint64_t next_seq = 0;
  std::vector<DropCount> dropped;
  // Of them, the events of devices a relaying agent keeps, by device (empty on a device).
  std::vector<OriginDropCount> origin_dropped;
  uint64_t corrupt_recoveries = 0;  // files moved aside as corrupt at open
  // Of the events pending in those files, how many could not be salvaged into this one (their
  // kinds are unknown: counted apart from `dropped`; docs/buffer.md, "Corruption").
  uint64_t corrupt_lost = 0;
  uint64_t duplicates = 0;         // events not stored again: known identity
  uint64_t quarantined_total = 0;  // messages ever quarantined
  uint64_t quarantine_rows = 0;    // of them, still in the quarantine table
  uint64_t file_bytes = 0;         // database + WAL on disk
  // The file system holding the buffer: free bytes (for unprivileged writers) and its size.
  uint64_t disk_free_bytes = 0;
  uint64_t disk_size_bytes = 0;
};

// When an append is committed: with the next group (the writer waits up to commit_interval
// for more appends to share the fsync), or at once, for a producer that waits for each
// append before it can take the next (the MQTT callback), where lingering is pure latency.
enum class Commit { grouped, now };

class Buffer {
 public:
  virtual ~Buffer() = default;

  // Queues `events` for the next group commit; returns at once. `done` runs on the writer
  // thread when they are durable, or with an error (full, disk_full, queue_full, closed,
  // corrupt) if none of them was stored: an append is all or nothing.
  virtual void append(std::vector<NewEvent> events, AppendCallback done,
                      Commit when = Commit::grouped, Acceptance acceptance = Acceptance::given) = 0;

  // The oldest events with seq > after_seq: at most max_events, and at most max_bytes of
  // bodies (but always at least one event when there is one).
  virtual Result<std::vector<StoredEvent>> read_batch(uint64_t after_seq, size_t max_events,
                                                      size_t max_bytes) = 0;
  // The same events without copying them: `visit` sees each in seq order (the forwarder
  // stamps them straight into a batch). Returns how many it saw.
  virtual Result<size_t> visit_batch(uint64_t after_seq, size_t max_events, size_t max_bytes,
                                     const EventVisitor& visit) = 0;
  // visit_batch over the rows `in_lane` takes (one of the forwarder's lanes, docs/protocol.md,
  // "Lanes"); the others are passed over, neither visited nor counted, at most 50,000 of them
  // per call. `scanned` is set to the last seq looked at and passed (taken or not), so the next
  // call goes on from there.
  virtual Result<size_t> visit_lane(uint64_t after_seq, size_t max_events, size_t max_bytes,
                                    const LaneFilter& in_lane, const EventVisitor& visit,
                                    uint64_t& scanned) = 0;

  // Deletes every event with seq <= up_to_seq, in one transaction, once it is durable.
  virtual Result<void> ack(uint64_t up_to_seq) = 0;
  // The same without waiting for the commit: the future holds its result. Acks queued by one
  // thread are applied in order; the forwarder keeps sending while the writer commits them.
  virtual std::future<Result<void>> ack_async(uint64_t up_to_seq) = 0;

  virtual Result<BufferStats> stats() = 0;

  // Keeps a message that could not become an event, with the reason; returns once it is
  // durable. The oldest rows go beyond quarantine_max_rows (they are counted, never retried).
  virtual Result<void> quarantine(QuarantineEntry entry) = 0;

  // False once the buffer hit an error it cannot recover from while running (corruption):
  // the agent must restart so that open() can recover.
  virtual bool healthy() const = 0;

  // Why appends are refused at once right now (the disk is full, the byte cap is reached for
  // `reject` kinds, the file is corrupt), or nullopt while they are taken. For /readyz.
  virtual std::optional<std::string> refusal_reason() const = 0;

  // An append whose commit also stores `progress` (replacing the row of its key): both or
  // neither. Committed at once (the source waits for each); a refusal is not counted as a
  // drop (Acceptance::on_commit), since the source still has the events and tries again.
  virtual void append_with_progress(std::vector<NewEvent> events, SourceProgress progress,
                                    AppendCallback done) = 0;
  // The progress rows whose key starts with `prefix`; erase_progress() removes one once its
  // source is done with what it describes (returns when that is durable).
  virtual Result<std::vector<SourceProgress>> read_progress(std::string_view prefix) = 0;
  virtual Result<void> erase_progress(std::string_view key) = 0;

  // Convenience over append(): a future that is ready when the events are durable.
  std::future<Result<AppendResult>> append(std::vector<NewEvent> events,
                                           Commit when = Commit::grouped);
};

}  // namespace outpost::agent

template <>
struct std::is_error_code_enum<outpost::agent::buffer_errc> : std::true_type {};
