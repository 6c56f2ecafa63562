#include "agent/buffer/sqlite_db.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace outpost::agent::sqlite {

Error error_from(int rc, sqlite3* db, const std::string& what) {
  int primary = rc & 0xff;
  buffer_errc code = buffer_errc::io;
  std::string hint;
  switch (primary) {
    case SQLITE_FULL:
      code = buffer_errc::disk_full;
      hint = ": the disk (or the file's page limit) is full; nothing of this write was stored";
      break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      code = buffer_errc::corrupt;
      hint = ": the buffer file is damaged; `outpost-agent buffer verify` tells more";
      break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      code = buffer_errc::busy;
      hint = ": another process holds the buffer's write lock";
      break;
    case SQLITE_IOERR:
      if (errno == ENOSPC) {
        code = buffer_errc::disk_full;
        hint = ": no space left on the device";
      }
      break;
    case SQLITE_CANTOPEN:
      hint = ": cannot open the file (missing directory or no permission?)";
      break;
    default:
      break;
  }
  std::string detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return make_error(code, what + ": " + detail + hint);
}

Db& Db::operator=(Db&& o) noexcept {
  if (this != &o) {
    close();
    h_ = o.h_;
    path_ = std::move(o.path_);
    o.h_ = nullptr;
  }
  return *this;
}

Result<Db> Db::open(const std::string& path, bool read_only) {
  Db db;
  db.path_ = path;
  int flags = read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  flags |= SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(path.c_str(), &db.h_, flags, nullptr);
  if (rc != SQLITE_OK) return error_from(rc, db.h_, "buffer " + path + ": open");
  sqlite3_extended_result_codes(db.h_, 1);
  sqlite3_busy_timeout(db.h_, 5000);
  return db;
}

void Db::close() {
  if (h_ != nullptr) {
    sqlite3_close_v2(h_);
    h_ = nullptr;
  }
}

Result<void> Db::exec(const std::string& sql) {
  char* msg = nullptr;
  int rc = sqlite3_exec(h_, sql.c_str(), nullptr, nullptr, &msg);
  sqlite3_free(msg);
  if (rc != SQLITE_OK) return error_from(rc, h_, "buffer " + path_);
  return {};
}

Result<int64_t> Db::query_int(const std::string& sql) {
  auto st = Stmt::prepare(*this, sql);
  if (!st) return st.error();
  int rc = st->step();
  if (rc == SQLITE_ROW) return st->col_int(0);
  if (rc == SQLITE_DONE) return int64_t{0};
  return error_from(rc, h_, "buffer " + path_);
}

Stmt& Stmt::operator=(Stmt&& o) noexcept {
  if (this != &o) {
    sqlite3_finalize(s_);
    s_ = o.s_;
    db_ = o.db_;
    o.s_ = nullptr;
  }
  return *this;
}

Result<Stmt> Stmt::prepare(Db& db, std::string_view sql) {
  Stmt st;
  st.db_ = db.handle();
  int rc = sqlite3_prepare_v3(db.handle(), sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &st.s_, nullptr);
  if (rc != SQLITE_OK) return error_from(rc, db.handle(), "buffer " + db.path());
  return st;
}

std::string Stmt::col_blob(int i) const {
  const void* p = sqlite3_column_blob(s_, i);
  int n = sqlite3_column_bytes(s_, i);
  return p == nullptr ? std::string() : std::string(static_cast<const char*>(p), n);
}

Result<void> create_schema(Db& db, std::string_view agent_id) {
  // docs/buffer.md documents every table and column; change both together.
  static const char* kSchema = R"sql(
    BEGIN IMMEDIATE;
    CREATE TABLE IF NOT EXISTS events (
      seq          INTEGER PRIMARY KEY,
      kind         INTEGER NOT NULL,
      priority     INTEGER NOT NULL,
      event_time   INTEGER NOT NULL,
      collected_at INTEGER NOT NULL,
      body         BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS drops (
      reason TEXT NOT NULL,
      kind   INTEGER NOT NULL,
      count  INTEGER NOT NULL,
      PRIMARY KEY (reason, kind)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO meta (key, value) VALUES ('next_seq', 1), ('acked_seq', 0);
  )sql";
  if (auto r = db.exec(kSchema); !r) {
    (void)db.exec("ROLLBACK");
    return r;
  }
  auto st = Stmt::prepare(db, "INSERT OR IGNORE INTO meta (key, value) VALUES ('agent_id', ?1)");
  if (!st) return st.error();
  st->bind_text(1, agent_id);
  if (int rc = st->step(); rc != SQLITE_DONE) {
    (void)db.exec("ROLLBACK");
    return error_from(rc, db.handle(), "buffer " + db.path() + ": create schema");
  }
  if (auto r = db.exec("PRAGMA user_version = " + std::to_string(kSchemaVersion) + "; COMMIT;");
      !r) {
    (void)db.exec("ROLLBACK");
    return r;
  }
  return {};
}

Result<std::string> check_integrity(Db& db, bool full, int max_rows) {
  auto st =
      Stmt::prepare(db, std::string(full ? "PRAGMA integrity_check(" : "PRAGMA quick_check(") +
                            std::to_string(max_rows) + ")");
  if (!st) return st.error();
  std::string out;
  int rc;
  while ((rc = st->step()) == SQLITE_ROW) {
    if (!out.empty()) out += "\n";
    out += st->col_blob(0);
  }
  if (rc != SQLITE_DONE) return error_from(rc, db.handle(), "buffer " + db.path() + ": check");
  return out;
}

Result<int64_t> meta_int(Db& db, std::string_view key, int64_t fallback) {
  auto st = Stmt::prepare(db, "SELECT value FROM meta WHERE key = ?1");
  if (!st) return st.error();
  st->bind_text(1, key);
  int rc = st->step();
  if (rc == SQLITE_ROW) return st->col_int(0);
  if (rc == SQLITE_DONE) return fallback;
  return error_from(rc, db.handle(), "buffer " + db.path());
}

namespace {
uint64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}
}  // namespace

Result<BufferStats> read_stats(Db& db) {
  // One read transaction, so that every figure comes from the same snapshot.
  if (auto r = db.exec("BEGIN"); !r) return r.error();
  struct EndRead {
    Db& db;
    ~EndRead() { (void)db.exec("COMMIT"); }
  } end_read{db};

  BufferStats s;
  auto version = db.query_int("PRAGMA user_version");
  if (!version) return version.error();
  s.schema_version = static_cast<uint32_t>(*version);
  {
    auto st = Stmt::prepare(db, "SELECT value FROM meta WHERE key = 'agent_id'");
    if (!st) return st.error();
    if (st->step() == SQLITE_ROW) s.agent_id = st->col_blob(0);
  }
  auto next = meta_int(db, "next_seq", 1);
  auto acked = meta_int(db, "acked_seq", 0);
  if (!next) return next.error();
  if (!acked) return acked.error();
  s.next_seq = static_cast<uint64_t>(*next);
  s.acked_seq = static_cast<uint64_t>(*acked);

  auto groups = Stmt::prepare(db,
                              "SELECT kind, priority, count(*), sum(length(body)), "
                              "min(event_time), max(event_time) FROM events "
                              "GROUP BY kind, priority ORDER BY kind, priority");
  if (!groups) return groups.error();
  int rc;
  while ((rc = groups->step()) == SQLITE_ROW) {
    GroupStats g;
    auto kind = kind_from_number(groups->col_int(0));
    if (!kind) continue;  // a row no writer of this version makes; verify reports the file
    g.kind = *kind;
    g.priority = static_cast<int32_t>(groups->col_int(1));
    g.events = static_cast<uint64_t>(groups->col_int(2));
    g.bytes = static_cast<uint64_t>(groups->col_int(3));
    g.oldest_event_time_ns = groups->col_int(4);
    g.newest_event_time_ns = groups->col_int(5);
    s.pending_events += g.events;
    s.pending_bytes += g.bytes;
    if (!s.oldest_event_time_ns || g.oldest_event_time_ns < *s.oldest_event_time_ns) {
      s.oldest_event_time_ns = g.oldest_event_time_ns;
    }
    if (!s.newest_event_time_ns || g.newest_event_time_ns > *s.newest_event_time_ns) {
      s.newest_event_time_ns = g.newest_event_time_ns;
    }
    s.groups.push_back(g);
  }
  if (rc != SQLITE_DONE) return error_from(rc, db.handle(), "buffer " + db.path() + ": stats");

  auto oldest = Stmt::prepare(db, "SELECT collected_at FROM events ORDER BY seq LIMIT 1");
  if (!oldest) return oldest.error();
  if (oldest->step() == SQLITE_ROW) s.oldest_collected_at_ns = oldest->col_int(0);

  auto drops = Stmt::prepare(db, "SELECT reason, kind, count FROM drops ORDER BY reason, kind");
  if (!drops) return drops.error();
  while ((rc = drops->step()) == SQLITE_ROW) {
    std::string reason = drops->col_blob(0);
    auto kind = kind_from_number(drops->col_int(1));
    for (int r = 0; r < kDropReasonCount; ++r) {
      if (kind && drop_reason_name(static_cast<DropReason>(r)) == reason) {
        s.dropped.push_back(
            {static_cast<DropReason>(r), *kind, static_cast<uint64_t>(drops->col_int(2))});
      }
    }
  }
  if (rc != SQLITE_DONE) return error_from(rc, db.handle(), "buffer " + db.path() + ": stats");

  s.corrupt_recoveries = read_state_file(db.path()).corrupt_recoveries;
  s.file_bytes = file_size(db.path()) + file_size(db.path() + "-wal");
  return s;
}

StateFile read_state_file(const std::string& db_path) {
  StateFile state;
  std::ifstream in(db_path + ".state");
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string key = line.substr(0, eq);
    uint64_t value = std::strtoull(line.c_str() + eq + 1, nullptr, 10);
    if (key == "reserved_seq") state.reserved_seq = value;
    if (key == "corrupt_recoveries") state.corrupt_recoveries = value;
  }
  return state;
}

Result<void> write_state_file(const std::string& db_path, const StateFile& state) {
  // Write a temporary file, fsync it, rename it over the old one, fsync the directory: the
  // state file is always either the old or the new content, never a torn mix.
  const std::string path = db_path + ".state";
  const std::string tmp = path + ".tmp";
  std::ostringstream text;
  text << "# outpost-agent buffer state; see docs/buffer.md. Do not edit.\n"
       << "reserved_seq=" << state.reserved_seq << "\n"
       << "corrupt_recoveries=" << state.corrupt_recoveries << "\n";
  const std::string content = text.str();
  auto fail = [&](const char* step) {
    return make_error(errno == ENOSPC ? buffer_errc::disk_full : buffer_errc::io,
                      "buffer state file " + path + ": " + step + ": " + std::strerror(errno));
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return fail("open");
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) {
    auto err = fail("write");
    ::unlink(tmp.c_str());
    return err;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("rename");
  std::string dir =
      path.substr(0, path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/'));
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

}  // namespace outpost::agent::sqlite
