#pragma once
// Internal to agent/buffer: a thin RAII layer over the SQLite C API, the buffer's schema and
// the queries that the writer (SqliteBuffer) and the read-only tools (BufferInspector) share.
// Not a public header: only the buffer's .cpp files include it (STYLE.md rule 2).
//
// Thread-safety: a Db and its Stmts belong to one thread at a time.

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/buffer/buffer.hpp"

namespace outpost::agent::sqlite {

// Schema version stored in PRAGMA user_version; docs/buffer.md describes each version.
// Version 1 kept every event in one table `events`; version 2 keeps them in segment tables
// (below). Read-only tools read both; the writer upgrades a version-1 file at open.
inline constexpr uint32_t kSchemaVersion = 2;

// The columns every event query selects, in this order.
#define OUTPOST_EVENT_COLUMNS "seq, kind, priority, event_time, collected_at, body"

Error error_from(int rc, sqlite3* db, const std::string& what);

class Db {
 public:
  Db() = default;
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;
  Db(Db&& o) noexcept : h_(o.h_), path_(std::move(o.path_)) { o.h_ = nullptr; }
  Db& operator=(Db&& o) noexcept;
  ~Db() { close(); }

  static Result<Db> open(const std::string& path, bool read_only);
  void close();
  Result<void> exec(const std::string& sql);
  // The single integer (or text) result of a one-row query such as a PRAGMA.
  Result<int64_t> query_int(const std::string& sql);
  sqlite3* handle() const { return h_; }
  const std::string& path() const { return path_; }

 private:
  sqlite3* h_ = nullptr;
  std::string path_;
};

class Stmt {
 public:
  Stmt() = default;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt(Stmt&& o) noexcept : s_(o.s_), db_(o.db_) { o.s_ = nullptr; }
  Stmt& operator=(Stmt&& o) noexcept;
  ~Stmt() { sqlite3_finalize(s_); }

  static Result<Stmt> prepare(Db& db, std::string_view sql);
  Stmt& bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Stmt& bind(int i, std::string_view v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    return *this;
  }
  Stmt& bind_text(int i, std::string_view v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE, or an error code.
  int step() { return sqlite3_step(s_); }
  void reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  int64_t col_int(int i) const { return sqlite3_column_int64(s_, i); }
  bool col_null(int i) const { return sqlite3_column_type(s_, i) == SQLITE_NULL; }
  std::string col_blob(int i) const;
  sqlite3_stmt* handle() const { return s_; }
  sqlite3* db() const { return db_; }

 private:
  sqlite3_stmt* s_ = nullptr;
  sqlite3* db_ = nullptr;
};

// Creates the current schema in an empty database (in one transaction).
Result<void> create_schema(Db& db, std::string_view agent_id, unsigned segment_shift);

// Events live in segment tables: `events_<F>` holds the seqs [F, F + 2^segment_shift), F a
// multiple of 2^segment_shift. A fully acknowledged segment is dropped whole, which costs a
// few pages instead of a B-tree delete per row; acked_seq hides the acknowledged rows of the
// segment that is only partly acknowledged. (A version-1 file's `events` table is first_seq 0.)
struct Segment {
  uint64_t first_seq = 0;
  std::string table;
};
std::string segment_table(uint64_t first_seq);
std::string segment_ddl(uint64_t first_seq);
// The event tables of the current snapshot, lowest seqs first.
Result<std::vector<Segment>> list_segments(Db& db);
// Calls `visit` with each pending event (seq > max(after_seq, acked_seq), and of `kind` when
// given) in seq order, as a row of OUTPOST_EVENT_COLUMNS, until it returns false. Call it in
// a read transaction so that every table comes from one snapshot.
Result<void> scan_events(Db& db, uint64_t after_seq, std::optional<EventKind> kind,
                         const std::function<bool(Stmt&)>& visit);
// A read transaction for the guard's lifetime: every query in it sees one snapshot.
class ReadTransaction {
 public:
  explicit ReadTransaction(Db& db) : db_(db) { ok_ = static_cast<bool>(db_.exec("BEGIN")); }
  ReadTransaction(const ReadTransaction&) = delete;
  ReadTransaction& operator=(const ReadTransaction&) = delete;
  ~ReadTransaction() {
    if (ok_) (void)db_.exec("COMMIT");
  }

 private:
  Db& db_;
  bool ok_ = false;
};
// Prepares `sql`, binds `args` to ?1, ?2, ... and calls `row` for each result row until it
// returns false (or for none, for a statement without results).
Result<void> for_each_row(Db& db, const std::string& sql, std::initializer_list<int64_t> args,
                          const std::function<bool(Stmt&)>& row = {});
// Moves a version-1 file's events (one table) into segment tables, in one transaction.
Result<void> upgrade_from_v1(Db& db, unsigned segment_shift);
// "ok", or the first problems SQLite reports. `full` runs integrity_check, else quick_check.
Result<std::string> check_integrity(Db& db, bool full, int max_rows = 20);
// The size of a file in bytes; 0 when it does not exist.
uint64_t file_size(const std::string& path);
// Counts and times from the tables themselves (a full scan: for tools, not the hot path).
Result<BufferStats> read_stats(Db& db);
// The side tables added after schema version 2 shipped (identities, quarantine): created if
// absent at every writable open, so older version-2 files gain them; readers treat a missing
// one as empty. An older agent ignores them.
Result<void> create_side_tables(Db& db);
Result<bool> table_exists(Db& db, std::string_view name);
// The quarantine rows, newest first, at most `limit`.
Result<std::vector<QuarantinedMessage>> read_quarantine(Db& db, size_t limit);
// Reads a meta value; `fallback` when the key is absent.
Result<int64_t> meta_int(Db& db, std::string_view key, int64_t fallback);

// The state file beside the buffer ("<path>.state") keeps what must survive even the loss of
// the database file: the highest seq ever reserved, and how many files were moved aside.
struct StateFile {
  uint64_t reserved_seq = 0;
  uint64_t corrupt_recoveries = 0;
  uint64_t corrupt_lost = 0;  // pending events of corrupt files that could not be salvaged
};
StateFile read_state_file(const std::string& db_path);
Result<void> write_state_file(const std::string& db_path, const StateFile& state);

}  // namespace outpost::agent::sqlite
