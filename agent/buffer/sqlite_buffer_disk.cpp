// SqliteBuffer: the disk under the buffer: how much room is left, refusing appends while it is
// full, and the reserve released so that acks can still be written (docs/buffer.md, "A full
// disk"); and why appends are refused right now, for /readyz.
#include "agent/buffer/sqlite_buffer_impl.hpp"
#include "common/units.hpp"

namespace outpost::agent {

uint64_t SqliteBuffer::Impl::headroom() {
  auto page = writer.query_int("PRAGMA page_size");
  auto free_pages = writer.query_int("PRAGMA freelist_count");
  if (!page || !free_pages) return UINT64_MAX;  // unknown: the write itself will tell
  const auto page_bytes = static_cast<uint64_t>(*page);
  const uint64_t inside = static_cast<uint64_t>(*free_pages) * page_bytes;
  const uint64_t on_disk = disk.free_bytes();
  // The WAL's pages may all have to be copied into the database file by the next checkpoint.
  const uint64_t wal = sqlite::file_size(opt.path + "-wal");
  uint64_t room = on_disk == UINT64_MAX ? UINT64_MAX : on_disk + inside;
  room = room > wal ? room - wal : 0;
  if (opt.max_file_bytes > 0) {
    auto pages = writer.query_int("PRAGMA page_count");
    auto max_pages = writer.query_int("PRAGMA max_page_count");
    if (pages && max_pages && *max_pages >= *pages) {
      room = std::min(room, static_cast<uint64_t>(*max_pages - *pages) * page_bytes + inside);
    }
  }
  return room;
}

void SqliteBuffer::Impl::refuse_for_disk(const std::string& why) {
  {
    std::lock_guard lock(mu);
    if (!disk_refusal) disk_refusal = why;
  }
  if (!disk_full_logged) {
    disk_full_logged = true;
    log->error("{}", why);
  }
}

void SqliteBuffer::Impl::check_disk_recovered() {
  if (!disk_full_logged) return;
  const uint64_t resume = std::max<uint64_t>(2 * disk.reserve_bytes(), 64 * 1024);
  const uint64_t room = headroom();
  if (room < resume) return;
  disk.hold();
  {
    std::lock_guard lock(mu);
    disk_refusal.reset();
  }
  disk_full_logged = false;
  log->info("buffer {}: writing again after the disk was full ({} left to the buffer)", opt.path,
            format_bytes(room));
}

void SqliteBuffer::Impl::release_reserve() {
  // The reserve first: the checkpoint that follows may need it to copy the WAL into the
  // database file; truncating the WAL then gives its space back too.
  const bool released = disk.release();
  (void)writer.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  if (!released) return;
  log->warn("buffer {}: released the {} disk reserve so that acknowledged events can be deleted",
            opt.path, format_bytes(disk.reserve_bytes()));
}

std::optional<std::string> SqliteBuffer::refusal_reason() const {
  const Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  if (!m.healthy) return "buffer " + m.opt.path + " hit corruption; the agent restarts";
  if (m.disk_refusal) return *m.disk_refusal;
  bool any_reject = false;
  for (const KindLimits& k : m.opt.kinds) any_reject = any_reject || k.policy == FullPolicy::reject;
  if (any_reject && m.committed.pending.total_bytes() >= m.opt.max_bytes) {
    return "buffer " + m.opt.path +
           " is full (buffer.max_bytes); events of kinds with policy "
           "reject are refused until the gateway acknowledges some";
  }
  return std::nullopt;
}

}  // namespace outpost::agent
