#pragma once
// Internal to agent/buffer: a thin RAII layer over the SQLite C API, the buffer's schema and
// the queries that the writer (SqliteBuffer) and the read-only tools (BufferInspector) share.
// Not a public header: only the buffer's .cpp files include it (STYLE.md rule 2).
//
// Thread-safety: a Db and its Stmts belong to one thread at a time.

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "agent/buffer/buffer.hpp"

namespace outpost::agent::sqlite {

// Schema version stored in PRAGMA user_version; docs/buffer.md describes each version.
inline constexpr uint32_t kSchemaVersion = 1;

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

// Creates the version-1 schema in an empty database (in one transaction).
Result<void> create_schema(Db& db, std::string_view agent_id);
// "ok", or the first problems SQLite reports. `full` runs integrity_check, else quick_check.
Result<std::string> check_integrity(Db& db, bool full, int max_rows = 20);
// Counts and times from the tables themselves (a full scan: for tools, not the hot path).
Result<BufferStats> read_stats(Db& db);
// Reads a meta value; `fallback` when the key is absent.
Result<int64_t> meta_int(Db& db, std::string_view key, int64_t fallback);

// The state file beside the buffer ("<path>.state") keeps what must survive even the loss of
// the database file: the highest seq ever reserved, and how many files were moved aside.
struct StateFile {
  uint64_t reserved_seq = 0;
  uint64_t corrupt_recoveries = 0;
};
StateFile read_state_file(const std::string& db_path);
Result<void> write_state_file(const std::string& db_path, const StateFile& state);

}  // namespace outpost::agent::sqlite
