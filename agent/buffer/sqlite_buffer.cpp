#include "agent/buffer/sqlite_buffer.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <thread>
#include <variant>

#include "agent/buffer/sqlite_db.hpp"
#include "common/log.hpp"
#include "common/units.hpp"

namespace outpost::agent {
namespace {

using sqlite::Db;
using sqlite::Stmt;

// Seqs are reserved in blocks in the state file before they are used, so that a buffer that
// had to start fresh (corrupt or deleted file) continues above every seq ever handed out.
constexpr uint64_t kSeqReserveBlock = 1u << 20;
constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max();

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

const char* synchronous_pragma(Synchronous s) {
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
};

struct AppendJob {
  std::vector<NewEvent> events;
  AppendCallback done;
  uint64_t body_bytes = 0;
  bool urgent = false;  // Commit::now: the writer does not linger for it
};
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
using Job = std::variant<AppendJob, AckJob, PurgeJob, ExpireJob, QuarantineJob>;

}  // namespace

struct SqliteBuffer::Impl {
  BufferOptions opt;
  const Clock& clock;
  std::shared_ptr<spdlog::logger> log = log::get("buffer");

  // Writer side: only the writer thread touches these after open().
  Db writer;
  Stmt update_meta_stmt, add_drops_stmt;
  Stmt find_identity_stmt, put_identity_stmt, add_quarantine_stmt, trim_quarantine_stmt;
  Stmt insert_stmt;  // into the segment insert_segment
  std::optional<uint64_t> insert_segment;
  uint64_t segment_size = 0;  // seqs per segment table: 2^segment_shift
  Counters working;
  int64_t data_version = 0;
  int64_t next_expiry_ns = 0;
  bool disk_full_logged = false;
  bool reserve_held = false;
  uint64_t corrupt_recoveries = 0;  // from the state file; changes only in open_file()

  // Shared between producers, the writer and stats().
  mutable std::mutex mu;
  std::condition_variable wake;
  std::deque<Job> queue;
  std::deque<std::chrono::steady_clock::time_point> enqueued_at;
  size_t queued_events = 0;
  size_t queued_urgent = 0;  // acks, purges: commit them without lingering
  bool stopping = false;
  Counters committed;
  std::atomic<bool> healthy{true};
  std::thread thread;

  // Reader side (forwarder, stats).
  std::mutex read_mu;
  Db reader;

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
  Result<size_t> scan_batch(uint64_t after_seq, size_t max_events, size_t max_bytes, Visit&& visit);
  bool uncount_from_reads(uint64_t after, uint64_t up_to, uint64_t segment, uint64_t& removed);
  // Takes one acknowledged row of `segment` off the tallies (a kind this version does not
  // know was never counted); true if it counted.
  bool uncount_acked(uint64_t segment, int64_t kind, int32_t priority, uint64_t size);

  Impl(BufferOptions o, const Clock& c) : opt(std::move(o)), clock(c) {}

  Result<void> open_file();
  Result<void> prepare_statements();
  Result<void> load_counters(Counters& c);
  void run();
  void run_group(std::vector<Job>& jobs);
  Result<void> apply(AppendJob& job, std::optional<Result<AppendResult>>& outcome);
  Result<bool> seen_before(const NewEvent& e);
  Result<void> remember(const NewEvent& e);
  Result<void> add_quarantine(const QuarantineEntry& q);
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
  void hold_reserve();
  Result<void> transact(const std::function<Result<void>()>& body);
  Result<uint64_t> acknowledge(uint64_t up_to_seq);
  Result<uint64_t> ack_in_chunks(uint64_t up_to_seq);
  void release_reserve();
  template <typename JobT>
  auto submit(JobT job) -> decltype(job.done.get_future());
  template <typename JobT>
  auto submit_and_wait(JobT job) -> decltype(job.done.get_future().get());
};

// ---- the disk reserve -----------------------------------------------------------------------

void SqliteBuffer::Impl::hold_reserve() {
  if (opt.disk_reserve_bytes == 0 || reserve_held) return;
  const std::string path = opt.path + ".reserve";
  struct statvfs fs {};
  std::string dir = opt.path.find('/') == std::string::npos
                        ? "."
                        : opt.path.substr(0, opt.path.find_last_of('/') + 1);
  if (::statvfs(dir.c_str(), &fs) != 0) return;
  uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
  struct stat st {};
  bool exists =
      ::stat(path.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) >= opt.disk_reserve_bytes;
  if (!exists && free_bytes < 2 * opt.disk_reserve_bytes) return;  // not yet: no thrashing
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  bool ok = exists || ::posix_fallocate(fd, 0, static_cast<off_t>(opt.disk_reserve_bytes)) == 0;
  ::close(fd);
  if (!ok) {
    ::unlink(path.c_str());
    return;
  }
  reserve_held = true;
}

void SqliteBuffer::Impl::release_reserve() {
  // A truncating checkpoint gives the WAL's space back too.
  (void)writer.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  if (!reserve_held) return;
  ::unlink((opt.path + ".reserve").c_str());
  reserve_held = false;
  log->warn("buffer {}: released the {} disk reserve so that acknowledged events can be deleted",
            opt.path, opt.disk_reserve_bytes);
}

// ---- opening --------------------------------------------------------------------------------

Result<void> SqliteBuffer::Impl::open_file() {
  const std::string& path = opt.path;
  auto state = sqlite::read_state_file(path);
  bool fresh = !file_exists(path);
  if (!fresh) {
    auto db = Db::open(path, /*read_only=*/false);
    if (!db) return db.error();
    writer = std::move(*db);
    std::optional<Error> damage;
    auto version = writer.query_int("PRAGMA user_version");
    if (!version) {
      if (version.error().code != buffer_errc::corrupt) return version.error();
      damage = version.error();
    } else if (*version > static_cast<int64_t>(sqlite::kSchemaVersion)) {
      return make_error(buffer_errc::newer_schema,
                        "buffer " + path + " has schema version " + std::to_string(*version) +
                            ", newer than this outpost-agent understands (" +
                            std::to_string(sqlite::kSchemaVersion) +
                            "): upgrade outpost-agent, or move the file away to start empty");
    } else {
      auto verdict = sqlite::check_integrity(writer, /*full=*/false);
      if (!verdict) {
        if (verdict.error().code != buffer_errc::corrupt) return verdict.error();
        damage = verdict.error();
      } else if (*verdict != "ok") {
        damage = make_error(buffer_errc::corrupt, "quick_check: " + *verdict);
      } else if (*version == 1) {
        if (auto r = sqlite::upgrade_from_v1(writer, opt.segment_shift); !r) return r;
        log->info("buffer {}: upgraded from schema version 1 to {}", path, sqlite::kSchemaVersion);
      } else if (*version == 0) {
        auto tables = writer.query_int("SELECT count(*) FROM sqlite_master");
        if (!tables) return tables.error();
        if (*tables != 0) {
          return make_error(buffer_errc::io, "buffer " + path +
                                                 " is a SQLite database but not an Outpost "
                                                 "buffer (no schema version): refusing to use it");
        }
        fresh = true;  // an empty file: initialise it
      }
    }
    if (damage) {
      writer.close();
      if (!opt.recover_corrupt) {
        return make_error(buffer_errc::corrupt,
                          "buffer " + path + " is corrupt (" + damage->message + ")");
      }
      const std::string aside =
          path + ".corrupt-" + format_time_ns(clock.now_ns(), /*compact=*/true);
      if (::rename(path.c_str(), aside.c_str()) != 0) {
        return make_error(buffer_errc::io, "buffer " + path +
                                               " is corrupt and cannot be moved "
                                               "aside to " +
                                               aside);
      }
      ::rename((path + "-wal").c_str(), (aside + "-wal").c_str());
      ::unlink((path + "-shm").c_str());
      state.corrupt_recoveries += 1;
      if (auto r = sqlite::write_state_file(path, state); !r) return r;
      log->error(
          "buffer {} failed its integrity check ({}); moved it aside as {} and started an "
          "empty buffer. Its events can be requeued with `outpost-agent buffer export --path "
          "{}` piped into `outpost-agent buffer import --path {}` if it is still readable",
          path, damage->message, aside, aside, path);
      fresh = true;
    }
  }
  corrupt_recoveries = state.corrupt_recoveries;
  if (!writer.handle()) {
    auto db = Db::open(path, /*read_only=*/false);
    if (!db) return db.error();
    writer = std::move(*db);
  }
  // A small WAL (checkpoint every 512 pages, truncate it back to 8 MiB) keeps the data in the
  // database file: a large WAL needs as much space again to be checkpointed, which a full
  // disk does not have.
  std::string pragmas = std::string("PRAGMA journal_mode=WAL; PRAGMA synchronous=") +
                        synchronous_pragma(opt.synchronous) +
                        "; PRAGMA journal_size_limit=8388608; PRAGMA wal_autocheckpoint=512;"
                        " PRAGMA cache_size=-8192; PRAGMA secure_delete=FAST;";
  if (auto r = writer.exec(pragmas); !r) return r;
  if (opt.max_file_bytes > 0) {
    auto page = writer.query_int("PRAGMA page_size");
    if (!page) return page.error();
    uint64_t pages = std::max<uint64_t>(opt.max_file_bytes / static_cast<uint64_t>(*page), 8);
    if (auto r = writer.exec("PRAGMA max_page_count = " + std::to_string(pages)); !r) return r;
  }
  if (fresh) {
    if (opt.segment_shift < 4 || opt.segment_shift > 30) {
      return make_error(
          buffer_errc::io,
          "buffer segment_shift " + std::to_string(opt.segment_shift) + " is outside 4..30");
    }
    if (auto r = sqlite::create_schema(writer, opt.agent_id, opt.segment_shift); !r) return r;
    if (state.reserved_seq > 0) {
      // Continue above every seq the previous file may have handed out.
      if (auto r = writer.exec("UPDATE meta SET value = " + std::to_string(state.reserved_seq + 1) +
                               " WHERE key = 'next_seq'");
          !r) {
        return r;
      }
    }
  }
  if (auto r = sqlite::create_side_tables(writer); !r) return r;
  auto shift = sqlite::meta_int(writer, "segment_shift", opt.segment_shift);
  if (!shift) return shift.error();
  if (*shift < 4 || *shift > 30) {
    return make_error(buffer_errc::corrupt, "buffer " + path + ": meta segment_shift " +
                                                std::to_string(*shift) + " is outside 4..30");
  }
  segment_size = uint64_t{1} << *shift;
  return {};
}

Result<void> SqliteBuffer::Impl::prepare_statements() {
  struct Want {
    Stmt* stmt;
    const char* sql;
  };
  const Want wants[] = {
      {&update_meta_stmt, "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)"},
      {&add_drops_stmt,
       "INSERT INTO drops (reason, kind, count) VALUES (?1, ?2, ?3) "
       "ON CONFLICT (reason, kind) DO UPDATE SET count = count + excluded.count"},
      {&find_identity_stmt, "SELECT 1 FROM identities WHERE key = ?1"},
      // REPLACE frees both the slot's old identity and an older slot holding the same one.
      {&put_identity_stmt, "INSERT OR REPLACE INTO identities (slot, key) VALUES (?1, ?2)"},
      {&add_quarantine_stmt,
       "INSERT INTO quarantine (at, source, subject, reason, size, payload) "
       "VALUES (?1, ?2, ?3, ?4, ?5, ?6)"},
      {&trim_quarantine_stmt, "DELETE FROM quarantine WHERE id <= last_insert_rowid() - ?1"},
  };
  for (const Want& w : wants) {
    auto st = Stmt::prepare(writer, w.sql);
    if (!st) return st.error();
    *w.stmt = std::move(*st);
  }
  auto db = Db::open(opt.path, /*read_only=*/true);
  if (!db) return db.error();
  reader = std::move(*db);
  return {};
}

// Reads the counters from the file: at open, and whenever another process has committed.
Result<void> SqliteBuffer::Impl::load_counters(Counters& c) {
  // The version first: a commit by another process while the counters are read (at open,
  // outside a transaction) then shows as a newer version, and the next transaction reloads.
  // Read last, it could hide that commit and leave next_seq stale (a seq used twice).
  auto version = writer.query_int("PRAGMA data_version");
  if (!version) return version.error();
  data_version = *version;
  c = Counters{};
  auto next = sqlite::meta_int(writer, "next_seq", 1);
  auto acked = sqlite::meta_int(writer, "acked_seq", 0);
  if (!next) return next.error();
  if (!acked) return acked.error();
  c.next_seq = static_cast<uint64_t>(*next);
  c.acked_seq = static_cast<uint64_t>(*acked);
  for (auto [key, field] :
       {std::pair{"identity_next", &c.identity_next}, std::pair{"duplicates", &c.duplicates},
        std::pair{"quarantined_total", &c.quarantined_total}}) {
    auto v = sqlite::meta_int(writer, key, 0);
    if (!v) return v.error();
    *field = static_cast<uint64_t>(*v);
  }
  c.reserved_seq = std::max(sqlite::read_state_file(opt.path).reserved_seq, c.next_seq - 1);

  insert_stmt = Stmt();  // the tables may have changed under it
  insert_segment.reset();
  auto segments = sqlite::list_segments(writer);
  if (!segments) return segments.error();
  auto from_snapshot = load_tally_snapshot(c, *segments);
  if (!from_snapshot) return from_snapshot.error();
  for (const sqlite::Segment& seg : *from_snapshot ? std::vector<sqlite::Segment>() : *segments) {
    Tally& t = c.segments[seg.first_seq];
    auto counted = sqlite::for_each_row(writer,
                                        "SELECT kind, priority, count(*), sum(length(body)) FROM " +
                                            seg.table + " WHERE seq > ?1 GROUP BY kind, priority",
                                        {static_cast<int64_t>(c.acked_seq)}, [&](Stmt& row) {
                                          if (auto k = kind_from_number(row.col_int(0))) {
                                            auto p = static_cast<int32_t>(row.col_int(1));
                                            auto n = static_cast<uint64_t>(row.col_int(2));
                                            auto bytes = static_cast<uint64_t>(row.col_int(3));
                                            t.add(*k, p, bytes, n);
                                            c.pending.add(*k, p, bytes, n);
                                          }
                                          return true;
                                        });
    if (!counted) return counted;
  }
  if (!segments->empty()) {
    auto last = sqlite::for_each_row(
        writer, "SELECT max(collected_at) FROM " + segments->back().table, {}, [&](Stmt& row) {
          c.last_collected_at = row.col_int(0);
          return false;
        });
    if (!last) return last;
  }

  int rc;
  auto drops = Stmt::prepare(writer, "SELECT reason, kind, count FROM drops");
  if (!drops) return drops.error();
  while ((rc = drops->step()) == SQLITE_ROW) {
    std::string reason = drops->col_blob(0);
    auto kind = kind_from_number(drops->col_int(1));
    for (int r = 0; r < kDropReasonCount && kind; ++r) {
      if (drop_reason_name(static_cast<DropReason>(r)) == reason) {
        c.dropped[r][kind_index(*kind)] = static_cast<uint64_t>(drops->col_int(2));
      }
    }
  }
  if (rc != SQLITE_DONE) return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path);
  return {};
}

Result<std::unique_ptr<SqliteBuffer>> SqliteBuffer::open(BufferOptions options,
                                                         const Clock& clock) {
  if (options.path.empty()) {
    return make_error(buffer_errc::io, "buffer path is empty: set buffer.path");
  }
  auto impl = std::make_unique<Impl>(std::move(options), clock);
  if (auto r = impl->open_file(); !r) return r.error();
  if (auto r = impl->prepare_statements(); !r) return r.error();
  {
    // One snapshot: another process (the agent, an import) may commit meanwhile.
    sqlite::ReadTransaction snapshot(impl->writer);
    if (auto r = impl->load_counters(impl->working); !r) return r.error();
  }
  impl->committed = impl->working;
  impl->hold_reserve();
  impl->next_expiry_ns = clock.now_ns();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<SqliteBuffer>(new SqliteBuffer(std::move(impl)));
}

SqliteBuffer::SqliteBuffer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SqliteBuffer::~SqliteBuffer() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->thread.join();
}

// ---- producers ------------------------------------------------------------------------------

void SqliteBuffer::append(std::vector<NewEvent> events, AppendCallback done, Commit when) {
  Impl& m = *impl_;
  uint64_t bytes = 0;
  for (const NewEvent& e : events) bytes += e.body.size();
  std::optional<Error> refused;
  bool wake = false;
  {
    std::lock_guard lock(m.mu);
    if (m.stopping) {
      refused = make_error(buffer_errc::closed, "buffer " + m.opt.path + " is closing");
    } else if (!m.healthy) {
      refused = make_error(buffer_errc::corrupt,
                           "buffer " + m.opt.path + " hit corruption; the agent must restart");
    } else if (!m.queue.empty() && m.queued_events + events.size() > m.opt.queue_max_events) {
      refused = make_error(buffer_errc::queue_full,
                           "buffer " + m.opt.path + ": " + std::to_string(m.queued_events) +
                               " events already wait for the disk; try again shortly");
    } else {
      // Wake the writer only when it has something new to decide: the first job of a group
      // (it then lingers until commit_interval) or a full group. Waking it for every append
      // cost a context switch per HTTP hit.
      const bool urgent = when == Commit::now;
      wake = urgent || m.queue.empty() ||
             (m.queued_events < m.opt.commit_max_events &&
              m.queued_events + events.size() >= m.opt.commit_max_events);
      m.queued_events += events.size();
      if (urgent) ++m.queued_urgent;
      m.queue.emplace_back(AppendJob{std::move(events), std::move(done), bytes, urgent});
      m.enqueued_at.push_back(std::chrono::steady_clock::now());
    }
  }
  if (refused) {
    done(*refused);
    return;
  }
  if (wake) m.wake.notify_one();
}

template <typename JobT>
auto SqliteBuffer::Impl::submit(JobT job) -> decltype(job.done.get_future()) {
  auto future = job.done.get_future();
  {
    std::lock_guard lock(mu);
    if (stopping) {
      job.done.set_value(make_error(buffer_errc::closed, "buffer " + opt.path + " is closing"));
      return future;
    }
    queue.emplace_back(std::move(job));
    enqueued_at.push_back(std::chrono::steady_clock::now());
    ++queued_urgent;
  }
  wake.notify_one();
  return future;
}

template <typename JobT>
auto SqliteBuffer::Impl::submit_and_wait(JobT job) -> decltype(job.done.get_future().get()) {
  return submit(std::move(job)).get();
}

Result<void> SqliteBuffer::ack(uint64_t up_to_seq) {
  return impl_->submit_and_wait(AckJob{up_to_seq, {}});
}

std::future<Result<void>> SqliteBuffer::ack_async(uint64_t up_to_seq) {
  return impl_->submit(AckJob{up_to_seq, {}});
}

Result<uint64_t> SqliteBuffer::purge(std::optional<EventKind> kind,
                                     std::optional<int64_t> collected_before_ns) {
  return impl_->submit_and_wait(PurgeJob{kind, collected_before_ns, {}});
}

Result<void> SqliteBuffer::expire_now() { return impl_->submit_and_wait(ExpireJob{}); }

Result<void> SqliteBuffer::quarantine(QuarantineEntry entry) {
  return impl_->submit_and_wait(QuarantineJob{std::move(entry), {}});
}

size_t SqliteBuffer::queued_events() const {
  std::lock_guard lock(impl_->mu);
  return impl_->queued_events;
}

bool SqliteBuffer::healthy() const { return impl_->healthy; }

// ---- readers --------------------------------------------------------------------------------

Result<std::vector<StoredEvent>> SqliteBuffer::read_batch(uint64_t after_seq, size_t max_events,
                                                          size_t max_bytes) {
  std::vector<StoredEvent> out;
  auto n = impl_->scan_batch(after_seq, max_events, max_bytes, [&](const StoredEventRef& e) {
    out.push_back(
        {e.seq, e.kind, e.priority, e.event_time_ns, e.collected_at_ns, std::string(e.body)});
  });
  if (!n) return n.error();
  return out;
}

Result<size_t> SqliteBuffer::visit_batch(uint64_t after_seq, size_t max_events, size_t max_bytes,
                                         const EventVisitor& visit) {
  return impl_->scan_batch(after_seq, max_events, max_bytes, visit);
}

// read_batch and visit_batch: the rows after `after_seq`, each seen by `visit` in place, and
// remembered (seq, kind, priority, size) for the acks that will follow (remember_read).
template <typename Visit>
Result<size_t> SqliteBuffer::Impl::scan_batch(uint64_t after_seq, size_t max_events,
                                              size_t max_bytes, Visit&& visit) {
  std::lock_guard lock(read_mu);
  if (max_events == 0) return size_t{0};
  size_t bytes = 0;
  Result<void> r;
  std::vector<ReadRow> rows;
  rows.reserve(std::min<size_t>(max_events, 4096));
  const uint64_t epoch = removal_epoch.load();  // before the snapshot (see transact())
  {
    sqlite::ReadTransaction snapshot(reader);
    r = sqlite::scan_events(reader, after_seq, std::nullopt, [&](Stmt& row) {
      const auto* body = static_cast<const char*>(sqlite3_column_blob(row.handle(), 5));
      const size_t size = static_cast<size_t>(sqlite3_column_bytes(row.handle(), 5));
      if (!rows.empty() && bytes + size > max_bytes) return false;
      StoredEventRef e;
      e.seq = static_cast<uint64_t>(row.col_int(0));
      const int64_t kind = row.col_int(1);
      e.kind = kind_from_number(kind).value_or(EventKind::json);
      e.priority = static_cast<int32_t>(row.col_int(2));
      e.event_time_ns = row.col_int(3);
      e.collected_at_ns = row.col_int(4);
      e.body = std::string_view(body == nullptr ? "" : body, size);
      rows.push_back({e.seq, size, kind, e.priority});
      bytes += size;
      visit(e);
      return rows.size() < max_events;
    });
  }
  if (!r) {
    note_error(r.error());
    return r.error();
  }
  const size_t seen = rows.size();
  if (!rows.empty()) remember_read(after_seq, epoch, std::move(rows));
  return seen;
}

Result<BufferStats> SqliteBuffer::stats() {
  Impl& m = *impl_;
  BufferStats s;
  s.agent_id = m.opt.agent_id;
  s.schema_version = sqlite::kSchemaVersion;
  {
    std::lock_guard lock(m.mu);
    const Counters& c = m.committed;
    s.pending_events = c.pending.total_events();
    s.pending_bytes = c.pending.total_bytes();
    s.acked_seq = c.acked_seq;
    s.next_seq = c.next_seq;
    s.duplicates = c.duplicates;
    s.quarantined_total = c.quarantined_total;
    for (int r = 0; r < kDropReasonCount; ++r) {
      for (EventKind k : kAllKinds) {
        if (uint64_t n = c.dropped[r][kind_index(k)]) {
          s.dropped.push_back({static_cast<DropReason>(r), k, n});
        }
      }
    }
    for (EventKind k : kAllKinds) {
      if (c.pending.events[kind_index(k)] != 0) {
        GroupStats g;
        g.kind = k;
        g.events = c.pending.events[kind_index(k)];
        g.bytes = c.pending.bytes[kind_index(k)];
        s.groups.push_back(g);
      }
    }
  }
  std::lock_guard lock(m.read_mu);
  sqlite::ReadTransaction snapshot(m.reader);
  auto oldest = sqlite::scan_events(m.reader, 0, std::nullopt, [&](Stmt& row) {
    s.oldest_collected_at_ns = row.col_int(4);
    s.oldest_event_time_ns = row.col_int(3);
    return false;
  });
  if (!oldest) return oldest.error();
  auto quarantined = m.reader.query_int("SELECT count(*) FROM quarantine");
  if (!quarantined) return quarantined.error();
  s.quarantine_rows = static_cast<uint64_t>(*quarantined);
  s.corrupt_recoveries = m.corrupt_recoveries;
  struct stat st {};
  if (::stat(m.opt.path.c_str(), &st) == 0) s.file_bytes += static_cast<uint64_t>(st.st_size);
  if (::stat((m.opt.path + "-wal").c_str(), &st) == 0) {
    s.file_bytes += static_cast<uint64_t>(st.st_size);
  }
  return s;
}

// ---- the writer -----------------------------------------------------------------------------

void SqliteBuffer::Impl::run() {
  using steady = std::chrono::steady_clock;
  const auto linger = std::chrono::nanoseconds(opt.commit_interval_ns);
  const auto tick = std::chrono::nanoseconds(opt.expire_interval_ns);
  std::unique_lock lock(mu);
  while (true) {
    if (queue.empty() && !stopping) wake.wait_for(lock, tick);
    if (stopping && queue.empty()) break;
    if (!queue.empty()) {
      // Group commit: wait for more appends until enough are queued or the oldest has waited
      // commit_interval. Acks and purges do not wait.
      const auto deadline = enqueued_at.front() + linger;
      while (!stopping && queued_urgent == 0 && queued_events < opt.commit_max_events &&
             steady::now() < deadline) {
        wake.wait_until(lock, deadline);
      }
    }
    std::vector<Job> jobs;
    size_t taken = 0;
    while (!queue.empty() && (jobs.empty() || taken < opt.commit_max_events)) {
      Job& job = queue.front();
      if (auto* a = std::get_if<AppendJob>(&job)) {
        taken += a->events.size();
        queued_events -= a->events.size();
        if (a->urgent) --queued_urgent;
      } else {
        --queued_urgent;
      }
      jobs.push_back(std::move(job));
      queue.pop_front();
      enqueued_at.pop_front();
    }
    lock.unlock();
    run_group(jobs);
    lock.lock();
  }
  lock.unlock();
  // Closing: leave the tallies for the next open (a crash leaves none, and it counts).
  if (healthy) {
    if (auto r = transact([this] { return write_tally_snapshot(); }); !r) {
      log->warn("{}: the next open will count the pending events", r.error().describe());
    }
  }
}

void SqliteBuffer::Impl::note_error(const Error& e) {
  if (e.code == buffer_errc::corrupt && healthy.exchange(false)) {
    log->error("{}: the buffer is unusable until the agent restarts and recovers it", e.describe());
  }
}

// Inserts one append's events, evicting first when the kind's policy is drop_oldest.
// `outcome` is set when the append is refused without failing the transaction.
Result<void> SqliteBuffer::Impl::apply(AppendJob& job,
                                       std::optional<Result<AppendResult>>& outcome) {
  if (job.events.empty()) {
    outcome = AppendResult{working.next_seq, working.next_seq - 1};
    return {};
  }
  if (working.pending.total_bytes() + job.body_bytes > opt.max_bytes) {
    // Every event of one append must fit; the strictest kind in it decides.
    int32_t priority = job.events.front().priority;
    bool may_evict = true;
    for (const NewEvent& e : job.events) {
      may_evict = may_evict && opt.kinds[kind_index(e.kind)].policy == FullPolicy::drop_oldest;
      priority = std::max(priority, e.priority);
    }
    bool fits = false;
    if (may_evict) {
      auto evicted =
          evict_for(priority, working.pending.total_bytes() + job.body_bytes - opt.max_bytes);
      if (!evicted) return evicted.error();
      fits = *evicted;
    }
    if (!fits) {
      for (const NewEvent& e : job.events) {
        ++working.dropped[static_cast<int>(DropReason::rejected_full)][kind_index(e.kind)];
      }
      outcome = make_error(buffer_errc::full, "buffer " + opt.path + " is full (" +
                                                  std::to_string(working.pending.total_bytes()) +
                                                  " of " + std::to_string(opt.max_bytes) +
                                                  " bytes, buffer.max_bytes)");
      return {};
    }
  }
  const int64_t now = clock.now_ns();
  AppendResult seqs{working.next_seq, 0, 0};
  for (const NewEvent& e : job.events) {
    if (!e.identity.empty()) {
      auto seen = seen_before(e);
      if (!seen) return seen.error();
      if (*seen) {
        ++seqs.duplicates;
        ++working.duplicates;
        continue;
      }
      if (auto r = remember(e); !r) return r;
    }
    // collected_at never decreases in seq order (docs/buffer.md): expiry relies on it.
    working.last_collected_at = std::max(working.last_collected_at, now);
    auto insert = insert_statement(working.next_seq);
    if (!insert) return insert.error();
    Stmt& st = **insert;
    st.bind(1, static_cast<int64_t>(working.next_seq))
        .bind(2, static_cast<int64_t>(e.kind))
        .bind(3, e.priority)
        .bind(4, e.event_time_ns)
        .bind(5, working.last_collected_at)
        .bind(6, std::string_view(e.body));
    int rc = st.step();
    st.reset();
    if (rc != SQLITE_DONE) {
      return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path + ": append");
    }
    count_in(working.next_seq, e.kind, e.priority, e.body.size());
    ++working.next_seq;
  }
  seqs.last_seq = working.next_seq - 1;
  outcome = seqs;
  return {};
}

Result<bool> SqliteBuffer::Impl::seen_before(const NewEvent& e) {
  if (!e.maybe_duplicate || opt.identity_window == 0) return false;
  find_identity_stmt.bind(1, std::string_view(e.identity));
  int rc = find_identity_stmt.step();
  find_identity_stmt.reset();
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path + ": identities");
}

Result<void> SqliteBuffer::Impl::remember(const NewEvent& e) {
  if (opt.identity_window == 0) return {};
  put_identity_stmt.bind(1, static_cast<int64_t>(working.identity_next % opt.identity_window))
      .bind(2, std::string_view(e.identity));
  int rc = put_identity_stmt.step();
  put_identity_stmt.reset();
  if (rc != SQLITE_DONE) {
    return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path + ": identities");
  }
  ++working.identity_next;
  return {};
}

Result<void> SqliteBuffer::Impl::add_quarantine(const QuarantineEntry& q) {
  std::string_view kept(q.payload);
  kept = kept.substr(0, opt.quarantine_keep_bytes);
  add_quarantine_stmt.bind(1, clock.now_ns())
      .bind_text(2, q.source)
      .bind_text(3, q.subject)
      .bind_text(4, q.reason)
      .bind(5, static_cast<int64_t>(q.payload.size()))
      .bind(6, kept);
  int rc = add_quarantine_stmt.step();
  add_quarantine_stmt.reset();
  if (rc == SQLITE_DONE) {
    trim_quarantine_stmt.bind(1, static_cast<int64_t>(opt.quarantine_max_rows));
    rc = trim_quarantine_stmt.step();
    trim_quarantine_stmt.reset();
  }
  if (rc != SQLITE_DONE) {
    return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path + ": quarantine");
  }
  ++working.quarantined_total;
  return {};
}

void SqliteBuffer::Impl::count_in(uint64_t seq, EventKind k, int32_t priority, uint64_t size) {
  working.pending.add(k, priority, size);
  working.segments[segment_of(seq)].add(k, priority, size);
}

void SqliteBuffer::Impl::count_out(uint64_t seq, EventKind k, int32_t priority, uint64_t size) {
  removed_pending = true;
  working.pending.remove(k, priority, size);
  auto it = working.segments.find(segment_of(seq));
  if (it != working.segments.end()) it->second.remove(k, priority, size);
}

// The insert statement for `seq`'s segment, creating the segment table when it is new.
Result<Stmt*> SqliteBuffer::Impl::insert_statement(uint64_t seq) {
  const uint64_t first = segment_of(seq);
  if (insert_segment == first) return &insert_stmt;
  if (!working.segments.contains(first)) {
    if (auto r = writer.exec(sqlite::segment_ddl(first)); !r) return r.error();
    working.segments[first];
  }
  auto st =
      Stmt::prepare(writer, "INSERT INTO " + sqlite::segment_table(first) +
                                " (" OUTPOST_EVENT_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  if (!st) return st.error();
  insert_stmt = std::move(*st);
  insert_segment = first;
  return &insert_stmt;
}

// Drops a segment table with every row in it, pending or hidden by acked_seq.
Result<void> SqliteBuffer::Impl::drop_segment(uint64_t first) {
  if (insert_segment == first) {
    insert_stmt = Stmt();
    insert_segment.reset();
  }
  if (auto r = writer.exec("DROP TABLE " + sqlite::segment_table(first)); !r) return r;
  auto it = working.segments.find(first);
  if (it != working.segments.end()) {
    working.pending.remove(it->second);
    working.segments.erase(it);
  }
  return {};
}

Result<void> SqliteBuffer::Impl::drop_empty_segments() {
  std::vector<uint64_t> empty;
  for (const auto& [first, tally] : working.segments) {
    if (tally.total_events() == 0) empty.push_back(first);
  }
  for (uint64_t first : empty) {
    if (auto r = drop_segment(first); !r) return r;
  }
  return {};
}

// Frees at least `needed` bytes (plus headroom, so that eviction does not run on every
// append) by deleting the oldest events of the lowest priority not above `priority`, among
// kinds whose policy is drop_oldest. Deletes nothing and returns false if that cannot free
// `needed`. There is no index on priority (it cost a third of the append rate): each
// priority, lowest first, is found by a scan in seq order that stops as soon as enough is
// found; with the headroom this runs once per 1/64 of max_bytes.
Result<bool> SqliteBuffer::Impl::evict_for(int32_t priority, uint64_t needed) {
  const uint64_t target = needed + opt.max_bytes / 64;
  struct Victim {
    uint64_t seq;
    EventKind kind;
    int32_t priority;
    uint64_t size;
  };
  std::vector<Victim> victims;
  uint64_t freed = 0;
  auto droppable_in = [&](const Tally& t, int32_t p) {
    auto it = t.by_priority.find(p);
    if (it == t.by_priority.end()) return false;
    for (EventKind k : kAllKinds) {
      if (it->second[kind_index(k)] > 0 &&
          opt.kinds[kind_index(k)].policy == FullPolicy::drop_oldest) {
        return true;
      }
    }
    return false;
  };
  for (const auto& [p, counts] : working.pending.by_priority) {
    if (p > priority || freed >= target) break;
    if (!droppable_in(working.pending, p)) continue;
    for (const auto& [first, tally] : working.segments) {
      if (freed >= target) break;
      if (!droppable_in(tally, p)) continue;
      auto scanned = sqlite::for_each_row(
          writer,
          "SELECT seq, kind, length(body) FROM " + sqlite::segment_table(first) +
              " WHERE seq > ?1 AND priority = ?2 ORDER BY seq",
          {static_cast<int64_t>(working.acked_seq), p}, [&](Stmt& row) {
            auto k = kind_from_number(row.col_int(1));
            if (k && opt.kinds[kind_index(*k)].policy == FullPolicy::drop_oldest) {
              victims.push_back({static_cast<uint64_t>(row.col_int(0)), *k, p,
                                 static_cast<uint64_t>(row.col_int(2))});
              freed += victims.back().size;
            }
            return freed < target;
          });
      if (!scanned) return scanned.error();
    }
  }
  if (freed < needed) return false;
  for (const Victim& v : victims) {
    auto deleted = sqlite::for_each_row(
        writer, "DELETE FROM " + sqlite::segment_table(segment_of(v.seq)) + " WHERE seq = ?1",
        {static_cast<int64_t>(v.seq)});
    if (!deleted) return deleted.error();
    count_out(v.seq, v.kind, v.priority, v.size);
    ++working.dropped[static_cast<int>(DropReason::evicted_full)][kind_index(v.kind)];
  }
  return true;
}

// Deletes pending events with seq <= max_seq (of `kind`, if given), counted as drops for
// `reason`. Purges and expiry only: acknowledgements hide and drop segments instead.
Result<uint64_t> SqliteBuffer::Impl::remove_rows(uint64_t max_seq, std::optional<EventKind> kind,
                                                 DropReason reason) {
  uint64_t removed = 0;
  std::vector<uint64_t> firsts;
  for (const auto& [first, tally] : working.segments) {
    if (first > max_seq) break;
    if (tally.total_events() > 0 && (!kind || tally.events[kind_index(*kind)] > 0)) {
      firsts.push_back(first);
    }
  }
  for (uint64_t first : firsts) {
    auto deleted = sqlite::for_each_row(
        writer,
        "DELETE FROM " + sqlite::segment_table(first) +
            " WHERE seq > ?1 AND seq <= ?2 AND (?3 = 0 OR kind = ?3) "
            "RETURNING seq, kind, priority, length(body)",
        {static_cast<int64_t>(working.acked_seq),
         static_cast<int64_t>(std::min<uint64_t>(max_seq, kNoLimit)),
         kind ? static_cast<int64_t>(*kind) : 0},
        [&](Stmt& row) {
          if (auto k = kind_from_number(row.col_int(1))) {
            count_out(static_cast<uint64_t>(row.col_int(0)), *k,
                      static_cast<int32_t>(row.col_int(2)), static_cast<uint64_t>(row.col_int(3)));
            ++working.dropped[static_cast<int>(reason)][kind_index(*k)];
            ++removed;
          }
          return true;
        });
    if (!deleted) return deleted.error();
  }
  return removed;
}

// The pending event with the lowest seq >= `seq`: its seq and collected_at (indexed reads).
Result<std::optional<std::pair<uint64_t, int64_t>>> SqliteBuffer::Impl::first_at_or_after(
    uint64_t seq) {
  std::optional<std::pair<uint64_t, int64_t>> found;
  const uint64_t from = std::max(seq, working.acked_seq + 1);
  for (auto it = working.segments.lower_bound(segment_of(from));
       it != working.segments.end() && !found; ++it) {
    if (it->second.total_events() == 0) continue;
    auto r =
        sqlite::for_each_row(writer,
                             "SELECT seq, collected_at FROM " + sqlite::segment_table(it->first) +
                                 " WHERE seq >= ?1 ORDER BY seq LIMIT 1",
                             {static_cast<int64_t>(from)}, [&](Stmt& row) {
                               found.emplace(static_cast<uint64_t>(row.col_int(0)), row.col_int(1));
                               return false;
                             });
    if (!r) return r.error();
  }
  return found;
}

// The highest seq whose collected_at is before `cutoff_ns`, by binary search over seqs
// (collected_at never decreases in seq order), in O(log n) indexed reads.
Result<std::optional<uint64_t>> SqliteBuffer::Impl::last_seq_collected_before(int64_t cutoff_ns) {
  auto first = first_at_or_after(0);
  if (!first) return first.error();
  if (!*first || (*first)->second >= cutoff_ns) return std::optional<uint64_t>();
  uint64_t good = (*first)->first;  // collected before the cutoff
  uint64_t bad = working.next_seq;  // nothing at or above is
  while (bad - good > 1) {
    uint64_t mid = good + (bad - good) / 2;
    auto row = first_at_or_after(mid);
    if (!row) return row.error();
    if (!*row || (*row)->first >= bad || (*row)->second >= cutoff_ns) {
      bad = mid;
    } else {
      good = (*row)->first;
    }
  }
  return std::optional<uint64_t>(good);
}

Result<void> SqliteBuffer::Impl::expire() {
  const int64_t now = clock.now_ns();
  for (EventKind k : kAllKinds) {
    int64_t max_age = opt.kinds[kind_index(k)].max_age_ns;
    if (max_age <= 0 || working.pending.events[kind_index(k)] == 0) continue;
    auto boundary = last_seq_collected_before(now - max_age);
    if (!boundary) return boundary.error();
    if (!*boundary) continue;
    auto removed = remove_rows(**boundary, k, DropReason::expired);
    if (!removed) return removed.error();
    if (*removed > 0) {
      log->warn("dropped {} {} events older than max_age {}s", *removed, kind_name(k),
                max_age / 1'000'000'000);
    }
  }
  next_expiry_ns = now + opt.expire_interval_ns;
  return {};
}

// Writes the meta rows and drop counters that changed since `before`.
Result<void> SqliteBuffer::Impl::persist(const Counters& before) {
  auto put_meta = [&](std::string_view key, uint64_t value) -> Result<void> {
    update_meta_stmt.bind_text(1, key).bind(2, static_cast<int64_t>(value));
    int rc = update_meta_stmt.step();
    update_meta_stmt.reset();
    if (rc != SQLITE_DONE) return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path);
    return {};
  };
  if (working.next_seq != before.next_seq) {
    if (auto r = put_meta("next_seq", working.next_seq); !r) return r;
  }
  if (working.acked_seq != before.acked_seq) {
    if (auto r = put_meta("acked_seq", working.acked_seq); !r) return r;
  }
  if (working.identity_next != before.identity_next) {
    if (auto r = put_meta("identity_next", working.identity_next); !r) return r;
  }
  if (working.duplicates != before.duplicates) {
    if (auto r = put_meta("duplicates", working.duplicates); !r) return r;
  }
  if (working.quarantined_total != before.quarantined_total) {
    if (auto r = put_meta("quarantined_total", working.quarantined_total); !r) return r;
  }
  for (int r = 0; r < kDropReasonCount; ++r) {
    for (EventKind k : kAllKinds) {
      uint64_t delta = working.dropped[r][kind_index(k)] - before.dropped[r][kind_index(k)];
      if (delta == 0) continue;
      add_drops_stmt.bind_text(1, drop_reason_name(static_cast<DropReason>(r)))
          .bind(2, static_cast<int64_t>(k))
          .bind(3, static_cast<int64_t>(delta));
      int rc = add_drops_stmt.step();
      add_drops_stmt.reset();
      if (rc != SQLITE_DONE) return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path);
    }
  }
  if (working.next_seq - 1 > working.reserved_seq) {
    // Reserve the next block of seqs in the state file before any of them is committed.
    auto state = sqlite::read_state_file(opt.path);
    state.reserved_seq = working.next_seq - 1 + kSeqReserveBlock;
    if (auto r = sqlite::write_state_file(opt.path, state); !r) return r;
    working.reserved_seq = state.reserved_seq;
  }
  return {};
}

// Runs `body` in one write transaction over `working`; `committed` takes the result only if
// the commit succeeds.
Result<void> SqliteBuffer::Impl::transact(const std::function<Result<void>()>& body) {
  auto attempt = [&]() -> Result<void> {
    if (auto r = writer.exec("BEGIN IMMEDIATE"); !r) return r;
    // Another process (buffer import/purge) may have committed since our last transaction.
    auto version = writer.query_int("PRAGMA data_version");
    if (!version) return version.error();
    removed_pending = false;
    if (*version != data_version) {
      ++removal_epoch;  // what it removed is not known: no read range is trusted any more
      if (auto r = load_counters(working); !r) return r;
      std::lock_guard lock(mu);
      committed = working;
    } else {
      working = committed;
    }
    if (tally_snapshot_may_exist) {  // this transaction changes what it describes
      if (auto r = writer.exec(
              "DELETE FROM tally_snapshot; DELETE FROM meta WHERE key = 'tally_snapshot_of'");
          !r) {
        return r;
      }
    }
    if (auto r = body(); !r) return r;
    if (auto r = drop_empty_segments(); !r) return r;
    if (auto r = persist(committed); !r) return r;
    return writer.exec("COMMIT");
  };
  Result<void> result = attempt();
  if (!result) {
    (void)writer.exec("ROLLBACK");
    insert_stmt = Stmt();  // its table may have been created by the rolled-back transaction
    insert_segment.reset();
    note_error(result.error());
    return result;
  }
  tally_snapshot_may_exist = false;
  // After the commit, not before: a read that began before it saw the removed rows and
  // carries the older epoch.
  if (removed_pending) ++removal_epoch;
  std::lock_guard lock(mu);
  committed = working;
  return result;
}

// The snapshot is valid for the seqs it names (meta tally_snapshot_of = "next_seq acked_seq")
// and the segment tables it lists; anything else (another writer, a crash after a write, an
// older agent) falls back to counting.
Result<bool> SqliteBuffer::Impl::load_tally_snapshot(Counters& c,
                                                     const std::vector<sqlite::Segment>& segments) {
  std::string of;
  auto marker = sqlite::for_each_row(
      writer, "SELECT value FROM meta WHERE key = 'tally_snapshot_of'", {}, [&](Stmt& row) {
        of = row.col_blob(0);
        return false;
      });
  if (!marker) return marker.error();
  tally_snapshot_may_exist = true;
  if (of != std::to_string(c.next_seq) + " " + std::to_string(c.acked_seq)) return false;
  std::map<uint64_t, Tally> tallies;
  bool valid = true;
  auto rows = sqlite::for_each_row(
      writer, "SELECT segment, kind, priority, events, bytes FROM tally_snapshot", {},
      [&](Stmt& row) {
        const auto segment = static_cast<uint64_t>(row.col_int(0));
        Tally& t = tallies[segment];
        if (row.col_int(1) == 0) return true;  // a segment with nothing pending
        auto k = kind_from_number(row.col_int(1));
        if (!k || row.col_int(3) < 0 || row.col_int(4) < 0) {
          valid = false;
          return false;
        }
        t.add(*k, static_cast<int32_t>(row.col_int(2)), static_cast<uint64_t>(row.col_int(4)),
              static_cast<uint64_t>(row.col_int(3)));
        return true;
      });
  if (!rows) return rows.error();
  valid = valid && tallies.size() == segments.size();
  for (const sqlite::Segment& seg : segments) valid = valid && tallies.count(seg.first_seq) == 1;
  if (!valid) return false;
  for (const auto& [segment, t] : tallies) c.pending.add(t);
  c.segments = std::move(tallies);
  return true;
}

// At a clean close, in the writer's last transaction.
Result<void> SqliteBuffer::Impl::write_tally_snapshot() {
  auto insert = Stmt::prepare(writer,
                              "INSERT INTO tally_snapshot (segment, kind, priority, events, bytes) "
                              "VALUES (?1, ?2, ?3, ?4, ?5)");
  if (!insert) return insert.error();
  auto row = [&](uint64_t segment, int64_t kind, int64_t priority, uint64_t events,
                 uint64_t bytes) -> Result<void> {
    insert->bind(1, static_cast<int64_t>(segment))
        .bind(2, kind)
        .bind(3, priority)
        .bind(4, static_cast<int64_t>(events))
        .bind(5, static_cast<int64_t>(bytes));
    const int rc = insert->step();
    insert->reset();
    if (rc != SQLITE_DONE) return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path);
    return {};
  };
  for (const auto& [segment, t] : working.segments) {
    if (auto r = row(segment, 0, 0, 0, 0); !r) return r;  // the segment, even if empty
    for (EventKind k : kAllKinds) {
      bool first = true;  // bytes are tallied by kind: on its first priority's row
      for (const auto& [priority, counts] : t.by_priority) {
        if (counts[kind_index(k)] == 0) continue;
        if (auto r = row(segment, static_cast<int64_t>(k), priority, counts[kind_index(k)],
                         first ? t.bytes[kind_index(k)] : 0);
            !r) {
          return r;
        }
        first = false;
      }
    }
  }
  const std::string of = std::to_string(working.next_seq) + " " + std::to_string(working.acked_seq);
  update_meta_stmt.bind_text(1, "tally_snapshot_of").bind_text(2, of);  // bound, not copied
  const int rc = update_meta_stmt.step();
  update_meta_stmt.reset();
  if (rc != SQLITE_DONE) return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path);
  return {};
}

// Acknowledges every seq <= up_to_seq: drops the segments wholly at or below it, and hides
// the acknowledged rows of a partly acknowledged segment behind acked_seq (they go when the
// rest of it does). Returns how many pending events that removed.
Result<uint64_t> SqliteBuffer::Impl::acknowledge(uint64_t up_to_seq) {
  const uint64_t up_to = std::min(up_to_seq, working.next_seq - 1);
  if (up_to <= working.acked_seq) return uint64_t{0};
  uint64_t removed = 0;
  while (!working.segments.empty()) {
    auto& [first, tally] = *working.segments.begin();
    if (first > up_to) break;
    if (first + segment_size - 1 <= up_to) {
      removed += tally.total_events();
      if (auto r = drop_segment(first); !r) return r.error();
      continue;
    }
    const uint64_t seg = first;
    if (uncount_from_reads(working.acked_seq, up_to, seg, removed)) break;
    auto hidden = sqlite::for_each_row(
        writer,
        "SELECT kind, priority, length(body) FROM " + sqlite::segment_table(seg) +
            " WHERE seq > ?1 AND seq <= ?2",
        {static_cast<int64_t>(working.acked_seq), static_cast<int64_t>(up_to)}, [&](Stmt& row) {
          removed += uncount_acked(seg, row.col_int(0), static_cast<int32_t>(row.col_int(1)),
                                   static_cast<uint64_t>(row.col_int(2)));
          return true;
        });
    if (!hidden) return hidden.error();
    break;
  }
  working.acked_seq = up_to;
  std::lock_guard lock(reads_mu);
  while (!reads.empty() && reads.begin()->second.last_seq <= up_to) reads.erase(reads.begin());
  return removed;
}

void SqliteBuffer::Impl::remember_read(uint64_t after_seq, uint64_t epoch,
                                       std::vector<ReadRow> rows) {
  const uint64_t last = rows.back().seq;
  std::lock_guard lock(reads_mu);
  reads[after_seq] = ReadRange{last, epoch, std::move(rows)};
  while (reads.size() > kMaxReadRanges) reads.erase(reads.begin());
}

// Removes from the tallies the rows of `segment` in (after, up_to] as read_batch saw them,
// if its reads cover that range in the current epoch; false (and nothing changed) if not.
bool SqliteBuffer::Impl::uncount_from_reads(uint64_t after, uint64_t up_to, uint64_t segment,
                                            uint64_t& removed) {
  std::lock_guard lock(reads_mu);
  const uint64_t epoch = removal_epoch.load();
  std::vector<const ReadRange*> chain;
  for (uint64_t at = after; at < up_to;) {
    auto it = reads.upper_bound(at);
    if (it == reads.begin()) return false;
    --it;  // the last range read after a seq <= at
    if (it->second.last_seq <= at || it->second.epoch != epoch) return false;
    chain.push_back(&it->second);
    at = it->second.last_seq;
  }
  for (const ReadRange* range : chain) {
    for (const ReadRow& row : range->rows) {
      if (row.seq <= after || row.seq < segment) continue;
      if (row.seq > up_to) break;
      removed += uncount_acked(segment, row.kind, row.priority, row.size);
    }
    after = range->last_seq;
  }
  return true;
}

bool SqliteBuffer::Impl::uncount_acked(uint64_t segment, int64_t kind, int32_t priority,
                                       uint64_t size) {
  auto k = kind_from_number(kind);
  if (!k) return false;
  working.pending.remove(*k, priority, size);
  working.segments[segment].remove(*k, priority, size);
  return true;
}

// On a full disk: acknowledge one segment per transaction, giving the WAL's space back after
// each, so that each step fits in what the previous one freed.
Result<uint64_t> SqliteBuffer::Impl::ack_in_chunks(uint64_t up_to_seq) {
  uint64_t total = 0;
  while (true) {
    uint64_t bound = up_to_seq;
    Result<uint64_t> removed = uint64_t{0};
    auto r = transact([&]() -> Result<void> {
      if (!working.segments.empty()) {
        bound = std::min(up_to_seq, working.segments.begin()->first + segment_size - 1);
      }
      removed = acknowledge(bound);
      return removed ? Result<void>() : Result<void>(removed.error());
    });
    if (!r) return r.error();
    total += *removed;
    (void)writer.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    if (bound >= up_to_seq) break;
  }
  // The hidden rows of a partly acknowledged segment still take space, which a full disk
  // needs now: delete them too, a few hundred per transaction.
  while (true) {
    int changes = 0;
    auto r = transact([&]() -> Result<void> {
      if (working.segments.empty() || working.segments.begin()->first > working.acked_seq) {
        return {};
      }
      const std::string table = sqlite::segment_table(working.segments.begin()->first);
      auto deleted =
          sqlite::for_each_row(writer,
                               "DELETE FROM " + table + " WHERE seq IN (SELECT seq FROM " + table +
                                   " WHERE seq <= ?1 ORDER BY seq LIMIT 256)",
                               {static_cast<int64_t>(working.acked_seq)});
      changes = sqlite3_changes(writer.handle());
      return deleted;
    });
    if (!r) return r.error();
    (void)writer.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    if (changes == 0) return total;
  }
}

void SqliteBuffer::Impl::run_group(std::vector<Job>& jobs) {
  std::vector<std::optional<Result<AppendResult>>> append_outcomes(jobs.size());
  std::vector<Result<uint64_t>> removed(jobs.size(), uint64_t{0});
  const bool expiry_due = clock.now_ns() >= next_expiry_ns;
  if (jobs.empty() && !expiry_due) return;  // an idle tick

  // While the disk is full, acks go first and in small steps: one large delete would grow
  // the WAL into the very space it is meant to free.
  std::vector<bool> done_early(jobs.size(), false);
  // A group of acks only commits without fsync: losing an ack to a power cut means the
  // events are sent again, and the gateway drops them as duplicates by (agent_id, seq).
  // The next durable commit syncs the WAL, and these frames with it.
  const bool acks_only = !jobs.empty() && std::all_of(jobs.begin(), jobs.end(), [](const Job& j) {
    return std::holds_alternative<AckJob>(j);
  });
  const bool relax = acks_only && opt.synchronous >= Synchronous::full;
  if (relax) (void)writer.exec("PRAGMA synchronous=NORMAL");
  if (disk_full_logged) {
    for (size_t i = 0; i < jobs.size(); ++i) {
      if (auto* ack = std::get_if<AckJob>(&jobs[i])) {
        removed[i] = ack_in_chunks(ack->up_to_seq);
        done_early[i] = true;
      }
    }
  }
  Result<void> result = transact([&]() -> Result<void> {
    for (size_t i = 0; i < jobs.size(); ++i) {
      Job& job = jobs[i];
      Result<void> r;
      if (done_early[i]) continue;
      if (auto* a = std::get_if<AppendJob>(&job)) {
        r = apply(*a, append_outcomes[i]);
      } else if (auto* ack = std::get_if<AckJob>(&job)) {
        removed[i] = acknowledge(ack->up_to_seq);
        if (!removed[i]) return removed[i].error();
      } else if (auto* purge = std::get_if<PurgeJob>(&job)) {
        uint64_t max_seq = std::numeric_limits<uint64_t>::max();
        if (purge->collected_before_ns) {
          auto boundary = last_seq_collected_before(*purge->collected_before_ns);
          if (!boundary) return boundary.error();
          max_seq = boundary->value_or(0);
        }
        removed[i] = max_seq == 0 ? Result<uint64_t>(uint64_t{0})
                                  : remove_rows(max_seq, purge->kind, DropReason::purged);
        if (!removed[i]) return removed[i].error();
      } else if (auto* q = std::get_if<QuarantineJob>(&job)) {
        r = add_quarantine(q->entry);
      } else {
        r = expire();
      }
      if (!r) return r;
    }
    if (expiry_due) return expire();
    return {};
  });
  if (!result && result.error().code == buffer_errc::disk_full) {
    if (!disk_full_logged) {
      disk_full_logged = true;
      log->error("{}; appends are refused until space is freed", result.error().describe());
    }
    release_reserve();
    // Acks are what frees the disk: retry them alone, in chunks small enough to fit.
    for (size_t i = 0; i < jobs.size(); ++i) {
      if (auto* ack = std::get_if<AckJob>(&jobs[i]); ack && !done_early[i]) {
        removed[i] = ack_in_chunks(ack->up_to_seq);
      }
    }
  }
  if (relax) {
    (void)writer.exec(std::string("PRAGMA synchronous=") + synchronous_pragma(opt.synchronous));
  }
  if (result) {
    if (!reserve_held) hold_reserve();
    if (disk_full_logged) {
      disk_full_logged = false;
      log->info("buffer {}: writing again after the disk was full", opt.path);
    }
  }

  // Tell each producer and waiter how its part went; never let a callback kill the writer.
  for (size_t i = 0; i < jobs.size(); ++i) {
    Job& job = jobs[i];
    try {
      if (auto* a = std::get_if<AppendJob>(&job)) {
        if (!result) {
          a->done(result.error());
        } else {
          a->done(*append_outcomes[i]);
        }
      } else if (auto* ack = std::get_if<AckJob>(&job)) {
        ack->done.set_value(removed[i] ? Result<void>() : Result<void>(removed[i].error()));
      } else if (auto* purge = std::get_if<PurgeJob>(&job)) {
        purge->done.set_value(result ? removed[i] : Result<uint64_t>(result.error()));
      } else if (auto* exp = std::get_if<ExpireJob>(&job)) {
        exp->done.set_value(result ? Result<void>() : Result<void>(result.error()));
      } else if (auto* q = std::get_if<QuarantineJob>(&job)) {
        q->done.set_value(result ? Result<void>() : Result<void>(result.error()));
      }
    } catch (const std::exception& e) {
      log->error("an append callback threw: {}", e.what());
    }
  }
}

}  // namespace outpost::agent
