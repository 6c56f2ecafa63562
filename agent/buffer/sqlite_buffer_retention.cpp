// SqliteBuffer: what leaves the buffer without an ack: eviction (drop_oldest), expiry (max_age),
// purges.
#include <algorithm>
#include <cstdlib>

#include "agent/buffer/sqlite_buffer_impl.hpp"
#include "proto/relayed.hpp"

namespace outpost::agent {

// The device whose relayed row a removing statement returned the head of (kOriginHeadSql);
// "" for an own event.
std::string relayed_origin(std::string_view head) {
  auto id = proto::relayed_identity(head);
  return id ? std::string(id->agent_id) : std::string();
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
    std::string origin;  // a relayed event's device
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
  for (const auto& by_priority : working.pending.by_priority) {
    const int32_t p = by_priority.first;  // not a structured binding: clang 14's lambdas
                                          // cannot capture one
    if (p > priority || freed >= target) break;
    if (!droppable_in(working.pending, p)) continue;
    for (const auto& [first, tally] : working.segments) {
      if (freed >= target) break;
      if (!droppable_in(tally, p)) continue;
      auto scanned = sqlite::for_each_row(
          writer,
          "SELECT seq, kind, length(body), " + std::string(kOriginHeadSql) + " FROM " +
              sqlite::segment_table(first) + " WHERE seq > ?1 AND priority = ?2 ORDER BY seq",
          {static_cast<int64_t>(working.acked_seq), p}, [&](Stmt& row) {
            auto k = kind_from_number(row.col_int(1));
            if (k && opt.kinds[kind_index(*k)].policy == FullPolicy::drop_oldest) {
              victims.push_back({static_cast<uint64_t>(row.col_int(0)), *k, p,
                                 static_cast<uint64_t>(row.col_int(2)),
                                 relayed_origin(row.col_blob(3))});
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
    if (!v.origin.empty()) {
      ++working.origin_dropped[{v.origin, static_cast<int>(DropReason::evicted_full)}];
    }
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
            "RETURNING seq, kind, priority, length(body), " +
            std::string(kOriginHeadSql),
        {static_cast<int64_t>(working.acked_seq),
         static_cast<int64_t>(std::min<uint64_t>(max_seq, kNoLimit)),
         kind ? static_cast<int64_t>(*kind) : 0},
        [&](Stmt& row) {
          if (auto k = kind_from_number(row.col_int(1))) {
            count_out(static_cast<uint64_t>(row.col_int(0)), *k,
                      static_cast<int32_t>(row.col_int(2)), static_cast<uint64_t>(row.col_int(3)));
            ++working.dropped[static_cast<int>(reason)][kind_index(*k)];
            if (std::string origin = relayed_origin(row.col_blob(4)); !origin.empty()) {
              ++working.origin_dropped[{origin, static_cast<int>(reason)}];
            }
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

// At open: the later of the wall clock, the age clock the last run saved and the newest
// collected_at; from here on it advances with the monotonic clock (docs/buffer.md, "Clock").
void SqliteBuffer::Impl::start_age_clock() {
  age_base_ns = std::max({clock.now_ns(), working.age_clock_ns, working.last_collected_at});
  age_base_mono_ns = clock.mono_ns();
  next_expiry_ns = age_base_mono_ns;
}

Result<void> SqliteBuffer::Impl::expire() {
  const int64_t now = age_now();
  next_expiry_ns = clock.mono_ns() + opt.expire_interval_ns;
  const int64_t skew = clock.now_ns() - now;
  constexpr int64_t kMinute = 60'000'000'000;
  if (std::llabs(skew - logged_skew_ns) > kMinute) {
    logged_skew_ns = skew;
    if (std::llabs(skew) > kMinute) {
      log->warn(
          "the wall clock is {}s {} the buffer's age clock (it jumped, or was set while the "
          "agent ran): max_age keeps counting on the monotonic clock, so no event expires "
          "because of the jump (docs/buffer.md, \"Clock\")",
          std::llabs(skew) / 1'000'000'000, skew > 0 ? "ahead of" : "behind");
    } else {
      log->info("the wall clock agrees with the buffer's age clock again");
    }
  }
  bool any_max_age = false;
  for (EventKind k : kAllKinds)
    any_max_age = any_max_age || opt.kinds[kind_index(k)].max_age_ns > 0;
  // Saved with this transaction for the next run, once a minute at most: a write (and an
  // fsync) at every expiry tick would wear an idle device's flash for nothing.
  if (any_max_age && now - working.age_clock_ns >= kMinute) working.age_clock_ns = now;
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
  return {};
}

}  // namespace outpost::agent
