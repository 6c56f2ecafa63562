#pragma once
// The internals of SqliteBuffer, shared by the files that implement it (one responsibility
// each, as LevelDB splits db_impl from version_set and log_writer):
//   sqlite_buffer.cpp            the public calls: open, append, read_batch, stats
//   sqlite_buffer_open.cpp       opening, corruption recovery, the counters and tally snapshot
//   sqlite_buffer_writer.cpp     the writer thread: group commit, appends, transactions
//   sqlite_buffer_ack.cpp        acknowledgements: dropping and hiding segments, read ranges
//   sqlite_buffer_retention.cpp  eviction (drop_oldest), expiry (max_age), purges
//   sqlite_buffer_seal.cpp       encryption at rest: the keys a file needs, tampered rows
//   disk_space.cpp               the disk reserve and the free-space floor (docs/buffer.md)
// Nothing here is part of the Buffer interface; only those files include it.
#include <sqlite3.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <thread>
#include <variant>

#include "agent/buffer/disk_space.hpp"
#include "agent/buffer/row_seal.hpp"
#include "agent/buffer/sqlite_buffer.hpp"
#include "agent/buffer/sqlite_db.hpp"
#include "common/file_lock.hpp"
#include "common/log.hpp"

namespace outpost::agent {

using sqlite::Db;
using sqlite::Stmt;

using sqlite::Db;
using sqlite::Stmt;

// Seqs are reserved in blocks in the state file before they are used, so that a buffer that
// had to start fresh (corrupt or deleted file) continues above every seq ever handed out.
constexpr uint64_t kSeqReserveBlock = 1u << 20;
constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max();

inline bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

inline const char* synchronous_pragma(Synchronous s) {
  switch (s) {
    case Synchronous::off:
      return "OFF";
    case Synchronous::normal:
      return "NORMAL";
    case Synchronous::full:
      return "FULL";
    case Synchronous::extra:
      return "EXTRA";
  }
  return "FULL";
}

// Pending (stored, not acknowledged) events by kind, and by priority and kind.
struct Tally {
  std::array<uint64_t, kKindCount> events{};
  std::array<uint64_t, kKindCount> bytes{};
  // Eviction's order without an index: the priorities present, ascending.
  std::map<int32_t, std::array<uint64_t, kKindCount>> by_priority;

  void add(EventKind k, int32_t priority, uint64_t size, uint64_t n = 1) {
    events[kind_index(k)] += n;
    bytes[kind_index(k)] += size;
    by_priority[priority][kind_index(k)] += n;
  }
  void remove(EventKind k, int32_t priority, uint64_t size, uint64_t n = 1) {
    events[kind_index(k)] -= n;
    bytes[kind_index(k)] -= size;
    auto it = by_priority.find(priority);
    if (it == by_priority.end()) return;
    it->second[kind_index(k)] -= n;
    if (it->second == std::array<uint64_t, kKindCount>{}) by_priority.erase(it);
  }
  void add(const Tally& part) {
    for (const auto& [priority, counts] : part.by_priority) {
      for (EventKind k : kAllKinds) {
        if (counts[kind_index(k)] > 0) add(k, priority, 0, counts[kind_index(k)]);
      }
    }
    for (EventKind k : kAllKinds) bytes[kind_index(k)] += part.bytes[kind_index(k)];
  }
  void remove(const Tally& part) {
    for (const auto& [priority, counts] : part.by_priority) {
      for (EventKind k : kAllKinds) {
        if (counts[kind_index(k)] == 0) continue;
        // Bytes by kind only: subtract them once, below.
        remove(k, priority, 0, counts[kind_index(k)]);
      }
    }
    for (EventKind k : kAllKinds) bytes[kind_index(k)] -= part.bytes[kind_index(k)];
  }
  uint64_t total_bytes() const { return bytes[0] + bytes[1] + bytes[2]; }
  uint64_t total_events() const { return events[0] + events[1] + events[2]; }
};

// What the writer knows about the file; `committed` mirrors the database, `working` is the
// copy a transaction changes and that becomes `committed` only when the commit succeeds.
struct Counters {
  uint64_t next_seq = 1;
  uint64_t acked_seq = 0;
  uint64_t reserved_seq = 0;
  int64_t last_collected_at = 0;
  Tally pending;
  std::map<uint64_t, Tally> segments;  // one per segment table, by its first seq
  std::array<std::array<uint64_t, kKindCount>, kDropReasonCount> dropped{};
  uint64_t identity_next = 0;  // the identities slot written next (modulo identity_window)
  uint64_t duplicates = 0;
  uint64_t quarantined_total = 0;
  // The buffer's age clock when expiry last ran (docs/buffer.md, "Clock"); 0: never.
  int64_t age_clock_ns = 0;
  // Relayed events dropped (evicted, expired, purged), by (device, DropReason): table
  // origin_drops.
  std::map<std::pair<std::string, int>, uint64_t> origin_dropped;
};

// The device a relayed body belongs to (proto/relayed.hpp), from the first bytes of the body
// that the removing statements return (kOriginHeadSql); "" for an own event.
std::string relayed_origin(std::string_view head);
// SQL for those first bytes: NULL unless the body is a relayed one.
inline constexpr const char* kOriginHeadSql =
    "CASE WHEN substr(body, 1, 1) = x'0a' THEN substr(body, 1, 150) END";

struct AppendJob {
  std::vector<NewEvent> events;
  AppendCallback done;
  uint64_t body_bytes = 0;
  bool urgent = false;  // Commit::now: the writer does not linger for it
  Acceptance acceptance = Acceptance::given;
  std::optional<SourceProgress> progress;  // stored in the same transaction (append_with_progress)
};

// Drops counted outside a transaction (an append refused at once, or whose transaction
// failed): added to the next transaction's counters, and persisted with it.
using DropCounts = std::array<std::array<uint64_t, kKindCount>, kDropReasonCount>;
struct AckJob {
  uint64_t up_to_seq;
  std::promise<Result<void>> done;
};
struct PurgeJob {
  std::optional<EventKind> kind;
  std::optional<int64_t> collected_before_ns;
  std::promise<Result<uint64_t>> done;
};
struct ExpireJob {
  std::promise<Result<void>> done;
};
struct QuarantineJob {
  QuarantineEntry entry;
  std::promise<Result<void>> done;
};
struct EraseProgressJob {
  std::string key;
  std::promise<Result<void>> done;
};
// Sealed rows whose tag did not verify when the reader opened them (row_seal.hpp): moved to
// the quarantine table and counted as dropped (tampered), before any ack can delete them.
struct TamperedJob {
  std::vector<uint64_t> seqs;
  std::promise<Result<void>> done;
};
using Job = std::variant<AppendJob, AckJob, PurgeJob, ExpireJob, QuarantineJob, EraseProgressJob,
                         TamperedJob>;

struct SqliteBuffer::Impl {
  BufferOptions opt;
  const Clock& clock;
  std::shared_ptr<spdlog::logger> log = log::get("buffer");

  // Writer side: only the writer thread touches these after open().
  Db writer;
  Stmt update_meta_stmt, add_drops_stmt;
  Stmt find_identity_stmt, put_identity_stmt, add_quarantine_stmt, trim_quarantine_stmt;
  Stmt put_progress_stmt, erase_progress_stmt;
  Stmt insert_stmt;  // into the segment insert_segment
  std::optional<uint64_t> insert_segment;
  uint64_t segment_size = 0;  // seqs per segment table: 2^segment_shift
  Counters working;
  RowSealer write_sealer{opt.encryption};  // seals what insert_row() stores
  int64_t data_version = 0;
  int64_t next_expiry_ns = 0;  // on the monotonic clock
  // The age clock max_age is measured on: at open the later of the wall clock and the age
  // clock saved by the last run, then advanced by the monotonic clock, so that a jump of
  // the wall clock neither expires events nor stops expiry (docs/buffer.md, "Clock").
  int64_t age_base_ns = 0, age_base_mono_ns = 0;
  int64_t logged_skew_ns = 0;  // wall clock minus age clock when last logged
  int64_t age_now() const { return age_base_ns + (clock.mono_ns() - age_base_mono_ns); }
  void start_age_clock();
  DiskSpace disk;
  FileLock file_lock;  // BufferOptions::exclusive
  // Appends are refused at once while the disk is below the floor (disk_space.hpp); the
  // writer clears it when acks (or anything else) have freed twice the reserve.
  bool disk_full_logged = false;
  uint64_t corrupt_recoveries = 0;          // from the state file; changes only in open_file()
  uint64_t corrupt_lost = 0;                // likewise
  std::optional<std::string> salvage_from;  // open_file(): the corrupt file just moved aside
  std::optional<uint64_t> salvage_acked, salvage_next;
  // A corrupt file's pending events copied into the fresh one with their seqs, at open.
  Result<void> salvage(const std::string& aside, std::optional<uint64_t> old_acked,
                       std::optional<uint64_t> old_next, sqlite::StateFile& state);

  // Shared between producers, the writer and stats().
  mutable std::mutex mu;
  std::condition_variable wake;
  std::deque<Job> queue;
  std::deque<std::chrono::steady_clock::time_point> enqueued_at;
  size_t queued_events = 0;
  size_t queued_urgent = 0;   // acks, purges: commit them without lingering
  uint64_t queued_bytes = 0;  // bodies of the queued appends
  bool stopping = false;
  std::optional<std::string> disk_refusal;  // why appends are refused for the disk, if they are
  DropCounts unsaved_drops{};
  bool has_unsaved_drops = false;
  Counters committed;
  std::atomic<bool> healthy{true};
  std::thread thread;

  // Reader side (forwarder, stats).
  std::mutex read_mu;
  Db reader;
  RowSealer read_sealer{opt.encryption};  // opens what scan_batch() reads; under read_mu

  // What read_batch returned, kept for acknowledge(): the kind, priority and size of each row
  // of a seq range, so that acknowledging a partly acknowledged segment's rows does not read
  // them again (that re-read was most of the writer's work during a drain). An entry holds
  // only while no pending row has been removed other than by an ack: every eviction, purge,
  // expiry or commit by another process bumps removal_epoch, and an entry read in an older
  // epoch is not used (the rows are counted from the table, as before).
  struct ReadRow {
    uint64_t seq;
    uint64_t size;
    int64_t kind;  // as stored; a kind this version does not know is not counted
    int32_t priority;
  };
  struct ReadRange {
    uint64_t last_seq = 0;  // the range is (key, last_seq]: every row in it was read
    uint64_t epoch = 0;
    std::vector<ReadRow> rows;
  };
  static constexpr size_t kMaxReadRanges = 64;  // a window of batches, with room to spare
  std::mutex reads_mu;
  std::map<uint64_t, ReadRange> reads;  // by the after_seq of the read
  std::atomic<uint64_t> removal_epoch{0};
  bool removed_pending = false;  // writer: this transaction removed rows other than by ack
  void remember_read(uint64_t after_seq, uint64_t epoch, std::vector<ReadRow> rows);
  template <typename Visit>
  // `in_lane`: only the rows it takes (visit_lane: the reads are not remembered for acks, as
  // they leave rows out), and `scanned` the last seq passed.
  Result<size_t> scan_batch(uint64_t after_seq, size_t max_events, size_t max_bytes, Visit&& visit,
                            const LaneFilter* in_lane = nullptr, uint64_t* scanned = nullptr);
  bool uncount_from_reads(uint64_t after, uint64_t up_to, uint64_t segment, uint64_t& removed);
  // Takes one acknowledged row of `segment` off the tallies (a kind this version does not
  // know was never counted); true if it counted.
  bool uncount_acked(uint64_t segment, int64_t kind, int32_t priority, uint64_t size);

  Impl(BufferOptions o, const Clock& c)
      : opt(std::move(o)), clock(c), disk(opt.path, opt.disk_reserve_bytes, opt.max_file_bytes) {}

  Result<void> open_file();
  // At open: every key id the file's pending rows were sealed with is among the configured
  // keys (buffer_errc::key_missing naming it otherwise); records the sealing key's id.
  Result<void> check_keys();
  // In a transaction: the rows of `seqs` that are still pending go to the quarantine table
  // (their stored bytes) and are counted as dropped (tampered).
  Result<void> quarantine_tampered(const std::vector<uint64_t>& seqs);
  Result<void> prepare_statements();
  Result<void> load_counters(Counters& c);
  void run();
  void run_group(std::vector<Job>& jobs);
  Result<void> apply(AppendJob& job, std::optional<Result<AppendResult>>& outcome);
  Result<bool> seen_before(const NewEvent& e);
  Result<void> insert_row(uint64_t seq, const NewEvent& e, int64_t collected_at);
  Result<bool> has_seq(uint64_t seq);
  Result<void> remember(const NewEvent& e);
  Result<void> add_quarantine(const QuarantineEntry& q);
  // A source's progress row: replaced (value) or removed (nullopt), in the open transaction.
  Result<void> put_progress(const std::string& key, const std::optional<std::string>& value);
  // The queueing behind append() and append_with_progress().
  void enqueue(std::vector<NewEvent> events, AppendCallback done, Commit when,
               Acceptance acceptance, std::optional<SourceProgress> progress);
  Result<uint64_t> remove_rows(uint64_t max_seq, std::optional<EventKind> kind, DropReason reason);
  Result<std::optional<std::pair<uint64_t, int64_t>>> first_at_or_after(uint64_t seq);
  Result<std::optional<uint64_t>> last_seq_collected_before(int64_t cutoff_ns);
  Result<void> expire();
  Result<bool> evict_for(int32_t priority, uint64_t needed);
  Result<void> persist(const Counters& before);
  // The pending tallies of a cleanly closed buffer (docs/buffer.md, tally_snapshot): read at
  // open instead of scanning every pending event, valid only while nothing has been written
  // after it.
  Result<bool> load_tally_snapshot(Counters& c, const std::vector<sqlite::Segment>& segments);
  Result<void> write_tally_snapshot();
  bool tally_snapshot_may_exist = true;  // the next transaction deletes it first
  uint64_t segment_of(uint64_t seq) const { return seq & ~(segment_size - 1); }
  void count_in(uint64_t seq, EventKind k, int32_t priority, uint64_t size);
  void count_out(uint64_t seq, EventKind k, int32_t priority, uint64_t size);
  Result<Stmt*> insert_statement(uint64_t seq);
  Result<void> drop_segment(uint64_t first);
  Result<void> drop_empty_segments();
  void note_error(const Error& e);
  // Counts a refused append's events as dropped if its source had told its client they were
  // taken (`at_once`: refused inside append()). Called with `mu` held.
  void count_refused_locked(const std::vector<NewEvent>& events, Acceptance acceptance,
                            const Error& e, bool at_once);
  // Whether every event of `events` is of a kind whose policy is `reject`.
  bool all_reject(const std::vector<NewEvent>& events) const;
  // The space left to the buffer: free bytes on the disk (or under max_file_bytes) plus the
  // database's free pages.
  uint64_t headroom();
  void refuse_for_disk(const std::string& why);
  // While refusing for the disk: resumes appends once headroom has twice the reserve.
  void check_disk_recovered();
  Result<void> transact(const std::function<Result<void>()>& body);
  Result<uint64_t> acknowledge(uint64_t up_to_seq);
  Result<uint64_t> ack_in_chunks(uint64_t up_to_seq);
  void release_reserve();
  Result<void> save_drops();  // a transaction of nothing but the unsaved drops
  template <typename JobT>
  auto submit(JobT job) -> decltype(job.done.get_future());
  template <typename JobT>
  auto submit_and_wait(JobT job) -> decltype(job.done.get_future().get());
};

}  // namespace outpost::agent
