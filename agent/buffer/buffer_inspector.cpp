#include "agent/buffer/buffer_inspector.hpp"

#include <unistd.h>

#include "agent/buffer/row_seal.hpp"
#include "agent/buffer/sqlite_db.hpp"

namespace outpost::agent {

struct BufferInspector::Impl {
  sqlite::Db db;
  std::unique_ptr<RowSealer> sealer = std::make_unique<RowSealer>(BufferEncryption{});
};

void BufferInspector::use_keys(const BufferEncryption& encryption) {
  BufferEncryption opening = encryption;
  opening.seal = false;  // a read-only view seals nothing
  impl_->sealer = std::make_unique<RowSealer>(std::move(opening));
}

BufferInspector::BufferInspector(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BufferInspector::BufferInspector(BufferInspector&&) noexcept = default;
BufferInspector& BufferInspector::operator=(BufferInspector&&) noexcept = default;
BufferInspector::~BufferInspector() = default;

Result<BufferInspector> BufferInspector::open(const std::string& path) {
  if (::access(path.c_str(), F_OK) != 0) {
    return make_error(buffer_errc::not_found, "buffer " + path + ": no such file");
  }
  if (::access(path.c_str(), R_OK) != 0) {
    return make_error(buffer_errc::io, "buffer " + path + ": not readable (permission denied)");
  }
  auto db = sqlite::Db::open(path, /*read_only=*/true);
  if (!db) return db.error();
  auto impl = std::make_unique<Impl>();
  impl->db = std::move(*db);
  return BufferInspector(std::move(impl));
}

Result<BufferStats> BufferInspector::stats() {
  auto version = impl_->db.query_int("PRAGMA user_version");
  if (!version) return version.error();
  if (*version > static_cast<int64_t>(sqlite::kSchemaVersion)) {
    return make_error(buffer_errc::newer_schema,
                      "buffer " + impl_->db.path() + " has schema version " +
                          std::to_string(*version) + "; this outpost-agent reads up to " +
                          std::to_string(sqlite::kSchemaVersion));
  }
  return sqlite::read_stats(impl_->db);
}

Result<size_t> BufferInspector::scan(const ScanFilter& filter,
                                     const std::function<bool(const StoredEvent&)>& visit) {
  if (filter.limit == 0) return size_t{0};
  size_t n = 0;
  std::optional<Error> unopened;
  sqlite::ReadTransaction snapshot(impl_->db);
  auto r = sqlite::scan_events(impl_->db, filter.after_seq, filter.kind, [&](sqlite::Stmt& row) {
    auto kind = kind_from_number(row.col_int(1));
    if (!kind) return true;
    StoredEvent e;
    e.seq = static_cast<uint64_t>(row.col_int(0));
    e.kind = *kind;
    e.priority = static_cast<int32_t>(row.col_int(2));
    e.event_time_ns = row.col_int(3);
    e.collected_at_ns = row.col_int(4);
    e.body = row.col_blob(5);
    if (filter.open_sealed && is_sealed(e.body)) {
      std::string_view plain;
      const RowMeta meta{e.seq, row.col_int(1), e.priority, e.event_time_ns, e.collected_at_ns};
      switch (impl_->sealer->open(meta, e.body, plain)) {
        case RowSealer::Opened::clear:
        case RowSealer::Opened::ok:
          e.body.assign(plain);
          break;
        case RowSealer::Opened::unknown_key:
          unopened =
              make_error(buffer_errc::key_missing,
                         "event seq " + std::to_string(e.seq) + " is sealed with key id " +
                             tls::AeadKey::id_hex_of(*sealed_key_id(e.body)) +
                             ": give that key (--key-file FILE, or --config of the agent whose "
                             "buffer.key_file or buffer.old_key_files has it)");
          return false;
        case RowSealer::Opened::failed:
          unopened = make_error(buffer_errc::corrupt,
                                "event seq " + std::to_string(e.seq) +
                                    " does not authenticate: its bytes or its metadata were "
                                    "changed (the agent quarantines it when it reads it)");
          return false;
      }
    }
    ++n;
    return visit(e) && n < filter.limit;
  });
  if (!r) return r.error();
  if (unopened) return *unopened;
  return n;
}

Result<std::vector<QuarantinedMessage>> BufferInspector::quarantine(size_t limit) {
  return sqlite::read_quarantine(impl_->db, limit);
}

Result<Verdict> BufferInspector::verify() {
  auto version = impl_->db.query_int("PRAGMA user_version");
  if (!version) {
    if (version.error().code == buffer_errc::corrupt)
      return Verdict{false, version.error().message};
    return version.error();
  }
  if (*version == 0 || *version > static_cast<int64_t>(sqlite::kSchemaVersion)) {
    return Verdict{false, "schema version " + std::to_string(*version) +
                              " is not one this outpost-agent knows (1.." +
                              std::to_string(sqlite::kSchemaVersion) + ")"};
  }
  auto check = sqlite::check_integrity(impl_->db, /*full=*/true);
  if (!check) {
    if (check.error().code == buffer_errc::corrupt) return Verdict{false, check.error().message};
    return check.error();
  }
  return Verdict{*check == "ok", *check};
}

std::string BufferInspector::agent_id() {
  auto st = sqlite::Stmt::prepare(impl_->db, "SELECT value FROM meta WHERE key = 'agent_id'");
  if (st && st->step() == SQLITE_ROW) return st->col_blob(0);
  return "";
}

}  // namespace outpost::agent
