#include "agent/buffer/sqlite_db.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
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

Result<void> create_schema(Db& db, std::string_view agent_id, unsigned segment_shift) {
  // docs/buffer.md documents every table and column; change both together.
  static const char* kSchema = R"sql(
    BEGIN IMMEDIATE;
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
  auto st = Stmt::prepare(db,
                          "INSERT OR IGNORE INTO meta (key, value) VALUES ('agent_id', ?1), "
                          "('segment_shift', ?2)");
  if (!st) return st.error();
  st->bind_text(1, agent_id).bind(2, static_cast<int64_t>(segment_shift));
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

Result<void> create_side_tables(Db& db) {
  // docs/buffer.md documents them; `identities` is a ring of identity_window slots.
  return db.exec(R"sql(
    CREATE TABLE IF NOT EXISTS identities (slot INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE);
    CREATE TABLE IF NOT EXISTS tally_snapshot (
      segment  INTEGER NOT NULL,
      kind     INTEGER NOT NULL,
      priority INTEGER NOT NULL,
      events   INTEGER NOT NULL,
      bytes    INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS quarantine (
      id      INTEGER PRIMARY KEY,
      at      INTEGER NOT NULL,
      source  TEXT NOT NULL,
      subject TEXT NOT NULL,
      reason  TEXT NOT NULL,
      size    INTEGER NOT NULL,
      payload BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS source_progress (key TEXT PRIMARY KEY, value TEXT NOT NULL)
      WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS origin_drops (
      origin TEXT NOT NULL,
      reason TEXT NOT NULL,
      count  INTEGER NOT NULL,
      PRIMARY KEY (origin, reason)
    ) WITHOUT ROWID;
  )sql");
}

Result<bool> table_exists(Db& db, std::string_view name) {
  auto st = Stmt::prepare(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1");
  if (!st) return st.error();
  st->bind_text(1, name);
  int rc = st->step();
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return error_from(rc, db.handle(), "buffer " + db.path());
}

Result<std::vector<QuarantinedMessage>> read_quarantine(Db& db, size_t limit) {
  std::vector<QuarantinedMessage> out;
  auto exists = table_exists(db, "quarantine");
  if (!exists) return exists.error();
  if (!*exists) return out;
  auto listed = for_each_row(
      db,
      "SELECT id, at, source, subject, reason, size, payload FROM quarantine ORDER BY id DESC "
      "LIMIT ?1",
      {static_cast<int64_t>(std::min<uint64_t>(limit, INT64_MAX))}, [&](Stmt& row) {
        QuarantinedMessage q;
        q.id = row.col_int(0);
        q.at_ns = row.col_int(1);
        q.source = row.col_blob(2);
        q.subject = row.col_blob(3);
        q.reason = row.col_blob(4);
        q.size = static_cast<uint64_t>(row.col_int(5));
        q.payload = row.col_blob(6);
        out.push_back(std::move(q));
        return true;
      });
  if (!listed) return listed.error();
  return out;
}

Result<void> for_each_row(Db& db, const std::string& sql, std::initializer_list<int64_t> args,
                          const std::function<bool(Stmt&)>& row) {
  auto st = Stmt::prepare(db, sql);
  if (!st) return st.error();
  int i = 1;
  for (int64_t a : args) st->bind(i++, a);
  int rc;
  while ((rc = st->step()) == SQLITE_ROW) {
    if (!row || !row(*st)) {
      st->reset();
      return {};
    }
  }
  if (rc != SQLITE_DONE) return error_from(rc, db.handle(), "buffer " + db.path());
  return {};
}

Result<void> upgrade_from_v1(Db& db, unsigned segment_shift) {
  auto body = [&]() -> Result<void> {
    auto acked = meta_int(db, "acked_seq", 0);
    if (!acked) return acked.error();
    std::vector<int64_t> firsts;
    auto listed =
        for_each_row(db, "SELECT DISTINCT (seq >> ?1) << ?1 FROM events WHERE seq > ?2 ORDER BY 1",
                     {static_cast<int64_t>(segment_shift), *acked}, [&](Stmt& row) {
                       firsts.push_back(row.col_int(0));
                       return true;
                     });
    if (!listed) return listed;
    for (int64_t first : firsts) {
      if (auto r = db.exec(segment_ddl(static_cast<uint64_t>(first))); !r) return r;
      auto moved = for_each_row(db,
                                "INSERT INTO " + segment_table(static_cast<uint64_t>(first)) +
                                    " SELECT " OUTPOST_EVENT_COLUMNS
                                    " FROM events WHERE seq >= ?1 AND seq < ?2 AND seq > ?3",
                                {first, first + (int64_t{1} << segment_shift), *acked});
      if (!moved) return moved;
    }
    return db.exec(
        "DROP TABLE events; INSERT OR REPLACE INTO meta (key, value) VALUES "
        "('segment_shift', " +
        std::to_string(segment_shift) +
        "); PRAGMA user_version = " + std::to_string(kSchemaVersion));
  };
  if (auto r = db.exec("BEGIN IMMEDIATE"); !r) return r;
  if (auto r = body(); !r) {
    (void)db.exec("ROLLBACK");
    return r;
  }
  return db.exec("COMMIT");
}

std::string segment_table(uint64_t first_seq) { return "events_" + std::to_string(first_seq); }

std::string segment_ddl(uint64_t first_seq) {
  return "CREATE TABLE " + segment_table(first_seq) +
         " (seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL, priority INTEGER NOT NULL, "
         "event_time INTEGER NOT NULL, collected_at INTEGER NOT NULL, body BLOB NOT NULL)";
}

Result<std::vector<Segment>> list_segments(Db& db) {
  auto st = Stmt::prepare(db,
                          "SELECT name FROM sqlite_master WHERE type = 'table' AND "
                          "(name = 'events' OR name GLOB 'events_[0-9]*')");
  if (!st) return st.error();
  std::vector<Segment> out;
  int rc;
  while ((rc = st->step()) == SQLITE_ROW) {
    Segment seg;
    seg.table = st->col_blob(0);
    if (seg.table != "events") seg.first_seq = std::strtoull(seg.table.c_str() + 7, nullptr, 10);
    out.push_back(std::move(seg));
  }
  if (rc != SQLITE_DONE) return error_from(rc, db.handle(), "buffer " + db.path() + ": schema");
  std::sort(out.begin(), out.end(),
            [](const Segment& a, const Segment& b) { return a.first_seq < b.first_seq; });
  return out;
}

Result<void> scan_events(Db& db, uint64_t after_seq, std::optional<EventKind> kind,
                         const std::function<bool(Stmt&)>& visit) {
  auto acked = meta_int(db, "acked_seq", 0);
  if (!acked) return acked.error();
  const uint64_t bound = std::max(after_seq, static_cast<uint64_t>(*acked));
  auto segments = list_segments(db);
  if (!segments) return segments.error();
  for (size_t i = 0; i < segments->size(); ++i) {
    // Segments hold disjoint, ascending seq ranges: skip those entirely at or below bound.
    if (i + 1 < segments->size() && (*segments)[i + 1].first_seq <= bound + 1) continue;
    auto st = Stmt::prepare(db, "SELECT " OUTPOST_EVENT_COLUMNS " FROM " + (*segments)[i].table +
                                    " WHERE seq > ?1 AND (?2 = 0 OR kind = ?2) ORDER BY seq");
    if (!st) return st.error();
    st->bind(1, static_cast<int64_t>(std::min<uint64_t>(bound, INT64_MAX)))
        .bind(2, kind ? static_cast<int64_t>(*kind) : 0);
    int rc;
    while ((rc = st->step()) == SQLITE_ROW) {
      if (!visit(*st)) return {};
    }
    if (rc != SQLITE_DONE) return error_from(rc, db.handle(), "buffer " + db.path() + ": read");
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

uint64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

Result<BufferStats> read_stats(Db& db) {
  ReadTransaction snapshot(db);  // every figure from the same snapshot

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

  auto segments = list_segments(db);
  if (!segments) return segments.error();
  std::map<std::pair<int64_t, int32_t>, GroupStats> groups;
  int rc;
  for (const Segment& seg : *segments) {
    auto st = Stmt::prepare(db,
                            "SELECT kind, priority, count(*), sum(length(body)), "
                            "min(event_time), max(event_time) FROM " +
                                seg.table + " WHERE seq > ?1 GROUP BY kind, priority");
    if (!st) return st.error();
    st->bind(1, *acked);
    while ((rc = st->step()) == SQLITE_ROW) {
      auto kind = kind_from_number(st->col_int(0));
      if (!kind) continue;  // a row no writer of this version makes; verify reports the file
      GroupStats& g = groups[{st->col_int(0), static_cast<int32_t>(st->col_int(1))}];
      bool first = g.events == 0;
      g.kind = *kind;
      g.priority = static_cast<int32_t>(st->col_int(1));
      g.events += static_cast<uint64_t>(st->col_int(2));
      g.bytes += static_cast<uint64_t>(st->col_int(3));
      g.oldest_event_time_ns =
          first ? st->col_int(4) : std::min(g.oldest_event_time_ns, st->col_int(4));
      g.newest_event_time_ns =
          first ? st->col_int(5) : std::max(g.newest_event_time_ns, st->col_int(5));
    }
    if (rc != SQLITE_DONE) return error_from(rc, db.handle(), "buffer " + db.path() + ": stats");
  }
  for (const auto& [key, g] : groups) {
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

  auto oldest = scan_events(db, 0, std::nullopt, [&](Stmt& row) {
    s.oldest_collected_at_ns = row.col_int(4);
    return false;
  });
  if (!oldest) return oldest.error();

  auto drops = Stmt::prepare(db, "SELECT reason, kind, count FROM drops ORDER BY reason, kind");
  if (!drops) return drops.error();
  while ((rc = drops->step()) == SQLITE_ROW) {
    const auto reason = drop_reason_from_name(drops->col_blob(0));
    const auto kind = kind_from_number(drops->col_int(1));
    if (reason && kind)
      s.dropped.push_back({*reason, *kind, static_cast<uint64_t>(drops->col_int(2))});
  }
  if (rc != SQLITE_DONE) return error_from(rc, db.handle(), "buffer " + db.path() + ": stats");
  auto has_origin_drops = table_exists(db, "origin_drops");  // made by a relaying agent's version
  if (!has_origin_drops) return has_origin_drops.error();
  if (*has_origin_drops) {
    auto od = Stmt::prepare(db, "SELECT origin, reason, count FROM origin_drops ORDER BY 1, 2");
    if (!od) return od.error();
    while ((rc = od->step()) == SQLITE_ROW) {
      if (const auto reason = drop_reason_from_name(od->col_blob(1))) {
        s.origin_dropped.push_back(
            {od->col_blob(0), *reason, static_cast<uint64_t>(od->col_int(2))});
      }
    }
    if (rc != SQLITE_DONE) return error_from(rc, db.handle(), "buffer " + db.path() + ": stats");
  }

  auto duplicates = meta_int(db, "duplicates", 0);
  auto quarantined = meta_int(db, "quarantined_total", 0);
  if (!duplicates) return duplicates.error();
  if (!quarantined) return quarantined.error();
  s.duplicates = static_cast<uint64_t>(*duplicates);
  s.quarantined_total = static_cast<uint64_t>(*quarantined);
  auto has_quarantine = table_exists(db, "quarantine");
  if (!has_quarantine) return has_quarantine.error();
  if (*has_quarantine) {
    auto rows = db.query_int("SELECT count(*) FROM quarantine");
    if (!rows) return rows.error();
    s.quarantine_rows = static_cast<uint64_t>(*rows);
  }

  s.corrupt_recoveries = read_state_file(db.path()).corrupt_recoveries;
  s.corrupt_lost = read_state_file(db.path()).corrupt_lost;
  s.file_bytes = file_size(db.path()) + file_size(db.path() + "-wal");
  struct statvfs fs {};
  const auto slash = db.path().find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : db.path().substr(0, slash + 1);
  if (::statvfs(dir.c_str(), &fs) == 0) {
    s.disk_free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
    s.disk_size_bytes = static_cast<uint64_t>(fs.f_blocks) * fs.f_frsize;
  }
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
    if (key == "corrupt_lost") state.corrupt_lost = value;
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
       << "corrupt_recoveries=" << state.corrupt_recoveries << "\n"
       << "corrupt_lost=" << state.corrupt_lost << "\n";
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
