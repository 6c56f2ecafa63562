// SqliteBuffer: opening a file, recovering a corrupt one, and reading its counters
// (docs/buffer.md).
#include "agent/buffer/sqlite_buffer_impl.hpp"

#include <cstdio>
#include <set>

#include "common/units.hpp"

namespace outpost::agent {

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
    std::optional<uint64_t> old_acked, old_next;
    if (damage) {
      // What was pending, as far as the damaged file still says (its meta rows).
      if (auto a = sqlite::meta_int(writer, "acked_seq", -1); a && *a >= 0) {
        old_acked = static_cast<uint64_t>(*a);
      }
      if (auto n = sqlite::meta_int(writer, "next_seq", -1); n && *n > 0) {
        old_next = static_cast<uint64_t>(*n);
      }
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
      log->error("buffer {} failed its integrity check ({}); moved it aside as {}", path,
                 damage->message, aside);
      fresh = true;
      salvage_from = aside;
      salvage_acked = old_acked;
      salvage_next = old_next;
    }
  }
  corrupt_recoveries = state.corrupt_recoveries;
  corrupt_lost = state.corrupt_lost;
  if (!writer.handle()) {
    auto db = Db::open(path, /*read_only=*/false);
    if (!db) return db.error();
    writer = std::move(*db);
  }
  // A small WAL keeps the data in the database file: a checkpoint copies the WAL's pages into
  // it, which needs as much space again, and a full disk does not have it. So the WAL is
  // checkpointed, and truncated back, well within the disk reserve (disk_space.hpp): at most
  // a quarter of it between checkpoints (512 pages without a reserve), cut back to half of it.
  uint64_t wal_pages = 512;
  uint64_t wal_limit = 8ULL << 20;
  if (disk.reserve_bytes() > 0) {
    wal_pages = std::clamp<uint64_t>(disk.reserve_bytes() / 4 / 4096, 16, 512);
    wal_limit = std::clamp<uint64_t>(disk.reserve_bytes() / 2, 64 * 1024, 8ULL << 20);
  }
  std::string pragmas = std::string("PRAGMA journal_mode=WAL; PRAGMA synchronous=") +
                        synchronous_pragma(opt.synchronous) +
                        "; PRAGMA journal_size_limit=" + std::to_string(wal_limit) +
                        "; PRAGMA wal_autocheckpoint=" + std::to_string(wal_pages) +
                        "; PRAGMA cache_size=-8192; PRAGMA secure_delete=FAST;";
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
  if (salvage_from) {
    if (auto r = salvage(*salvage_from, salvage_acked, salvage_next, state); !r) return r;
    corrupt_lost = state.corrupt_lost;
  }
  return {};
}

// Copies every readable pending row of the file moved aside into the fresh one, with its seq
// and collected_at, so that the gateway's dedupe recognises what it already has and the rest
// is sent in order before anything new. A damaged b-tree is read from both ends (forward until
// the damage, then backward down to it). What cannot be read is counted (corrupt_lost, in the
// state file: it outlives this file too) and logged with its seq range.
Result<void> SqliteBuffer::Impl::salvage(const std::string& aside,
                                         std::optional<uint64_t> old_acked,
                                         std::optional<uint64_t> old_next,
                                         sqlite::StateFile& state) {
  const uint64_t acked = old_acked.value_or(0);
  uint64_t salvaged = 0, lowest = UINT64_MAX, highest = 0;
  std::optional<std::string> unreadable;
  auto damaged = Db::open(aside, /*read_only=*/true);
  if (auto r = writer.exec("BEGIN IMMEDIATE"); !r) return r;
  std::set<uint64_t> created;
  auto copy_row = [&](Stmt& row) -> Result<void> {
    const auto seq = static_cast<uint64_t>(row.col_int(0));
    if (seq <= acked) return {};
    const uint64_t first = seq & ~(segment_size - 1);
    if (created.insert(first).second) {
      if (auto r = writer.exec(sqlite::segment_ddl(first)); !r) return r;  // the file is new
    }
    auto insert =
        Stmt::prepare(writer, "INSERT OR IGNORE INTO " + sqlite::segment_table(first) +
                                  " (" OUTPOST_EVENT_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (!insert) return insert.error();
    const std::string body = row.col_blob(5);  // bound by reference: must outlive step()
    insert->bind(1, row.col_int(0))
        .bind(2, row.col_int(1))
        .bind(3, row.col_int(2))
        .bind(4, row.col_int(3))
        .bind(5, row.col_int(4))
        .bind(6, std::string_view(body));
    const int rc = insert->step();
    if (rc != SQLITE_DONE) return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path);
    if (sqlite3_changes(writer.handle()) > 0) {
      ++salvaged;
      lowest = std::min(lowest, seq);
      highest = std::max(highest, seq);
    }
    return {};
  };
  Result<void> copied;
  if (!damaged) {
    unreadable = damaged.error().describe();
  } else {
    std::vector<std::string> tables;
    auto listed = sqlite::for_each_row(
        *damaged, "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'events%'", {},
        [&](Stmt& row) {
          tables.push_back(row.col_blob(0));
          return true;
        });
    if (!listed) unreadable = listed.error().describe();
    for (const std::string& table : tables) {
      for (const char* order : {"ASC", "DESC"}) {
        auto st = Stmt::prepare(*damaged, "SELECT " OUTPOST_EVENT_COLUMNS " FROM " + table +
                                              " WHERE seq > ?1 ORDER BY seq " + order);
        if (!st) {
          unreadable = st.error().describe();
          break;
        }
        st->bind(1, static_cast<int64_t>(acked));
        int rc;
        while ((rc = st->step()) == SQLITE_ROW && copied) copied = copy_row(*st);
        if (!copied) break;
        if (rc == SQLITE_DONE) break;  // read whole: no need to come from the other end
        unreadable = sqlite::error_from(rc, damaged->handle(), table).describe();
      }
      if (!copied) break;
    }
    // The sources' progress too (when its table is readable), so that a spool file part-way
    // is not read again from its start.
    if (copied) {
      if (auto st = Stmt::prepare(*damaged, "SELECT key, value FROM source_progress"); st) {
        auto put = Stmt::prepare(
            writer, "INSERT OR REPLACE INTO source_progress (key, value) VALUES (?1, ?2)");
        if (!put) copied = put.error();
        while (copied && st->step() == SQLITE_ROW) {
          const std::string key = st->col_blob(0), value = st->col_blob(1);
          put->bind_text(1, key).bind_text(2, value);
          const int rc = put->step();
          put->reset();
          if (rc != SQLITE_DONE) copied = sqlite::error_from(rc, writer.handle(), opt.path);
        }
      }
    }
  }
  if (damaged) damaged->close();  // the aside file is left as it was moved
  ::unlink((aside + "-shm").c_str());
  if (copied && old_acked) {
    copied = writer.exec("UPDATE meta SET value = " + std::to_string(*old_acked) +
                         " WHERE key = 'acked_seq'");
  }
  if (copied) copied = writer.exec("COMMIT");
  if (!copied) {
    (void)writer.exec("ROLLBACK");
    log->error("buffer {}: could not copy the readable events of {} ({}); they stay there",
               opt.path, aside, copied.error().describe());
    salvaged = 0;
  }
  // Pending in the damaged file: (acked_seq, next_seq) when its meta rows were readable, else
  // the span of the rows read (a lower bound). Events evicted or expired earlier inside that
  // range were counted then and are counted again here: an overcount, never an undercount.
  uint64_t pending = salvaged;
  std::string range = salvaged > 0 ? std::to_string(lowest) + ".." + std::to_string(highest)
                                   : std::string("none readable");
  if (old_next && *old_next > acked + 1) {
    pending = std::max(pending, *old_next - 1 - acked);
    range = std::to_string(acked + 1) + ".." + std::to_string(*old_next - 1);
  } else if (salvaged > 0) {
    pending = std::max(pending, highest - lowest + 1);
  }
  const uint64_t lost = pending - salvaged;
  state.corrupt_lost += lost;
  if (auto r = sqlite::write_state_file(opt.path, state); !r) return r;
  log->error(
      "buffer {}: {} events were pending in the corrupt file (seqs {}); {} were salvaged into "
      "the fresh buffer with their seqs and will be sent first, {} could not be read and are "
      "counted as lost (buffer stats: corrupt_lost){}. The file stays at {}: `outpost-agent "
      "buffer export --path {}` piped into `outpost-agent buffer import --path {}` while the "
      "agent is stopped adds anything more that it can read, without duplicates",
      opt.path, pending, range, salvaged, lost,
      unreadable ? "; SQLite said: " + *unreadable : std::string(), aside, aside, opt.path);
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
      {&put_progress_stmt, "INSERT OR REPLACE INTO source_progress (key, value) VALUES (?1, ?2)"},
      {&erase_progress_stmt, "DELETE FROM source_progress WHERE key = ?1"},
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
  auto age = sqlite::meta_int(writer, "age_clock_ns", 0);
  if (!age) return age.error();
  c.age_clock_ns = *age;
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
    const auto reason = drop_reason_from_name(drops->col_blob(0));
    const auto kind = kind_from_number(drops->col_int(1));
    if (reason && kind) {
      c.dropped[static_cast<int>(*reason)][kind_index(*kind)] =
          static_cast<uint64_t>(drops->col_int(2));
    }
  }
  if (rc != SQLITE_DONE) return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path);
  c.origin_dropped.clear();
  auto origin_drops = Stmt::prepare(writer, "SELECT origin, reason, count FROM origin_drops");
  if (!origin_drops) return origin_drops.error();
  while ((rc = origin_drops->step()) == SQLITE_ROW) {
    if (const auto reason = drop_reason_from_name(origin_drops->col_blob(1))) {
      c.origin_dropped[{origin_drops->col_blob(0), static_cast<int>(*reason)}] =
          static_cast<uint64_t>(origin_drops->col_int(2));
    }
  }
  if (rc != SQLITE_DONE) return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path);
  return {};
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

}  // namespace outpost::agent
