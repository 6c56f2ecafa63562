// Encryption at rest (docs/buffer.md, "Encryption at rest"; row_seal.hpp seals and opens the
// rows): which keys a file needs, and what happens to a row whose tag does not verify.
#include <set>
#include <sstream>

#include "agent/buffer/sqlite_buffer_impl.hpp"

namespace outpost::agent {
namespace {

// meta 'key_ids': the ids of the keys rows were sealed with, "0a1b2c3d,...".
std::set<uint32_t> parse_ids(const std::string& text) {
  std::set<uint32_t> out;
  std::istringstream in(text);
  for (std::string id; std::getline(in, id, ',');) {
    if (id.size() == 8) out.insert(static_cast<uint32_t>(std::stoul(id, nullptr, 16)));
  }
  return out;
}

std::string join_ids(const std::set<uint32_t>& ids) {
  std::string out;
  for (uint32_t id : ids) out += (out.empty() ? "" : ",") + tls::AeadKey::id_hex_of(id);
  return out;
}

}  // namespace

Result<void> SqliteBuffer::Impl::check_keys() {
  std::string text;
  {
    auto st = Stmt::prepare(writer, "SELECT value FROM meta WHERE key = 'key_ids'");
    if (!st) return st.error();
    if (st->step() == SQLITE_ROW) text = st->col_blob(0);
  }
  std::set<uint32_t> recorded = parse_ids(text);
  std::set<uint32_t> configured;
  for (const tls::AeadKey& k : opt.encryption.keys) configured.insert(k.id());
  std::set<uint32_t> needed = recorded;
  for (uint32_t id : recorded) {
    if (configured.contains(id)) continue;
    // A key no longer given: fine once none of the rows it sealed is pending.
    bool pending = false;
    for (const auto& [first, tally] : working.segments) {
      if (tally.total_events() == 0) continue;
      auto r = sqlite::for_each_row(
          writer,
          "SELECT 1 FROM " + sqlite::segment_table(first) +
              " WHERE seq > ?1 AND substr(body, 1, 2) = x'ff45' AND substr(body, 4, 4) = x'" +
              tls::AeadKey::id_hex_of(id) + "' LIMIT 1",
          {static_cast<int64_t>(working.acked_seq)}, [&](Stmt&) {
            pending = true;
            return false;
          });
      if (!r) return r;
      if (pending) break;
    }
    if (pending) {
      return make_error(buffer_errc::key_missing,
                        "buffer " + opt.path + " holds pending events sealed with key id " +
                            tls::AeadKey::id_hex_of(id) +
                            ", which none of the configured keys has: give that key in "
                            "buffer.key_file or buffer.old_key_files (docs/buffer.md, "
                            "\"Encryption at rest\")");
    }
    needed.erase(id);
  }
  if (write_sealer.sealing()) needed.insert(opt.encryption.keys.front().id());
  if (needed == recorded) return {};
  auto st =
      Stmt::prepare(writer, "INSERT OR REPLACE INTO meta (key, value) VALUES ('key_ids', ?1)");
  if (!st) return st.error();
  const std::string ids = join_ids(needed);  // bound without a copy: it must outlive step()
  st->bind_text(1, ids);
  if (int rc = st->step(); rc != SQLITE_DONE) {
    return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path + ": key ids");
  }
  return {};
}

Result<void> SqliteBuffer::Impl::quarantine_tampered(const std::vector<uint64_t>& seqs) {
  std::set<uint64_t> touched;
  for (uint64_t seq : seqs) {
    if (seq <= working.acked_seq || !working.segments.contains(segment_of(seq))) continue;
    std::optional<QuarantineEntry> entry;
    auto r = sqlite::for_each_row(
        writer,
        "DELETE FROM " + sqlite::segment_table(segment_of(seq)) +
            " WHERE seq = ?1 RETURNING kind, body",
        {static_cast<int64_t>(seq)}, [&](Stmt& row) {
          // The kind as stored, which may be what was changed.
          const EventKind kind = kind_from_number(row.col_int(0)).value_or(EventKind::json);
          ++working.dropped[static_cast<int>(DropReason::tampered)][kind_index(kind)];
          const std::string stored = row.col_blob(1);
          const auto key = sealed_key_id(stored);
          entry = QuarantineEntry{"buffer", "seq " + std::to_string(seq),
                                  "a sealed event that does not authenticate (key id " +
                                      (key ? tls::AeadKey::id_hex_of(*key) : std::string("?")) +
                                      "): its bytes or its metadata were changed; kept as stored",
                                  stored};
          return false;
        });
    if (!r) return r;
    if (!entry) continue;
    touched.insert(segment_of(seq));
    if (auto q = add_quarantine(*entry); !q) return q;
  }
  // The rows' metadata may be what was changed, so what they were counted with is not known:
  // count their segments again from what is left.
  for (uint64_t first : touched) {
    Tally fresh;
    auto r = sqlite::for_each_row(
        writer,
        "SELECT kind, priority, count(*), sum(length(body)) FROM " + sqlite::segment_table(first) +
            " WHERE seq > ?1 GROUP BY kind, priority",
        {static_cast<int64_t>(working.acked_seq)}, [&](Stmt& row) {
          if (auto kind = kind_from_number(row.col_int(0))) {
            fresh.add(*kind, static_cast<int32_t>(row.col_int(1)),
                      static_cast<uint64_t>(row.col_int(3)), static_cast<uint64_t>(row.col_int(2)));
          }
          return true;
        });
    if (!r) return r;
    Tally& old = working.segments[first];
    working.pending.remove(old);
    working.pending.add(fresh);
    old = fresh;
    removed_pending = true;  // read ranges remembered before this no longer hold
  }
  return {};
}

}  // namespace outpost::agent
