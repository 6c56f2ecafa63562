// SqliteBuffer: acknowledgements drop whole segments and hide the acknowledged rows of the one they
// cut through.
#include "agent/buffer/sqlite_buffer_impl.hpp"

namespace outpost::agent {

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

}  // namespace outpost::agent
