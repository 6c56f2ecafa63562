// SqliteBuffer's writer thread: group commit of appends, acks, purges and quarantine rows.
#include "agent/buffer/sqlite_buffer_impl.hpp"
#include "common/units.hpp"

namespace outpost::agent {

// ---- the writer -----------------------------------------------------------------------------

void SqliteBuffer::Impl::run() {
  using steady = std::chrono::steady_clock;
  const auto linger = std::chrono::nanoseconds(opt.commit_interval_ns);
  const auto tick = std::chrono::nanoseconds(opt.expire_interval_ns);
  std::unique_lock lock(mu);
  while (true) {
    if (queue.empty() && !stopping) wake.wait_for(lock, tick);
    if (stopping && queue.empty()) break;
    if (!queue.empty()) {
      // Group commit: wait for more appends until enough are queued or the oldest has waited
      // commit_interval. Acks and purges do not wait.
      const auto deadline = enqueued_at.front() + linger;
      while (!stopping && queued_urgent == 0 && queued_events < opt.commit_max_events &&
             steady::now() < deadline) {
        wake.wait_until(lock, deadline);
      }
    }
    std::vector<Job> jobs;
    size_t taken = 0;
    while (!queue.empty() && (jobs.empty() || taken < opt.commit_max_events)) {
      Job& job = queue.front();
      if (auto* a = std::get_if<AppendJob>(&job)) {
        taken += a->events.size();
        queued_events -= a->events.size();
        queued_bytes -= a->body_bytes;
        if (a->urgent) --queued_urgent;
      } else {
        --queued_urgent;
      }
      jobs.push_back(std::move(job));
      queue.pop_front();
      enqueued_at.pop_front();
    }
    lock.unlock();
    run_group(jobs);
    lock.lock();
  }
  lock.unlock();
  // Closing: the drops first, in a transaction of their own that fits on a full disk; then
  // the tallies for the next open (a crash leaves none, and it counts).
  if (auto r = save_drops(); !r) {
    log->error("{}: drop counters of this run could not be stored", r.error().describe());
  }
  if (healthy) {
    if (auto r = transact([this] { return write_tally_snapshot(); }); !r) {
      log->warn("{}: the next open will count the pending events", r.error().describe());
    }
  }
}

void SqliteBuffer::Impl::note_error(const Error& e) {
  if (e.code == buffer_errc::corrupt && healthy.exchange(false)) {
    log->error("{}: the buffer is unusable until the agent restarts and recovers it", e.describe());
  }
}

// Inserts one append's events, evicting first when the kind's policy is drop_oldest.
// `outcome` is set when the append is refused without failing the transaction.
Result<void> SqliteBuffer::Impl::apply(AppendJob& job,
                                       std::optional<Result<AppendResult>>& outcome) {
  if (job.events.empty()) {
    outcome = AppendResult{working.next_seq, working.next_seq - 1};
    return {};
  }
  if (working.pending.total_bytes() + job.body_bytes > opt.max_bytes) {
    // Every event of one append must fit; the strictest kind in it decides.
    int32_t priority = job.events.front().priority;
    bool may_evict = true;
    for (const NewEvent& e : job.events) {
      may_evict = may_evict && opt.kinds[kind_index(e.kind)].policy == FullPolicy::drop_oldest;
      priority = std::max(priority, e.priority);
    }
    bool fits = false;
    if (may_evict) {
      auto evicted =
          evict_for(priority, working.pending.total_bytes() + job.body_bytes - opt.max_bytes);
      if (!evicted) return evicted.error();
      fits = *evicted;
    }
    if (!fits) {
      if (job.acceptance != Acceptance::on_commit) {
        for (const NewEvent& e : job.events) {
          ++working.dropped[static_cast<int>(DropReason::rejected_full)][kind_index(e.kind)];
        }
      }
      outcome = make_error(buffer_errc::full, "buffer " + opt.path + " is full (" +
                                                  std::to_string(working.pending.total_bytes()) +
                                                  " of " + std::to_string(opt.max_bytes) +
                                                  " bytes, buffer.max_bytes)");
      return {};
    }
  }
  const int64_t now = age_now();  // collected_at is on the age clock (docs/buffer.md, "Clock")
  AppendResult seqs{working.next_seq, 0, 0};
  uint64_t assigned = 0;
  for (const NewEvent& e : job.events) {
    if (!e.identity.empty()) {
      auto seen = seen_before(e);
      if (!seen) return seen.error();
      if (*seen) {
        ++seqs.duplicates;
        ++working.duplicates;
        continue;
      }
      if (auto r = remember(e); !r) return r;
    }
    if (e.seq != 0) {  // it keeps its seq (an import of a salvage)
      auto present = has_seq(e.seq);
      if (!present) return present.error();
      if (e.seq <= working.acked_seq || *present) {
        ++seqs.skipped;
        continue;
      }
      if (auto r = insert_row(e.seq, e, e.collected_at_ns > 0 ? e.collected_at_ns : now); !r) {
        return r;
      }
      working.next_seq = std::max(working.next_seq, e.seq + 1);
      ++seqs.kept_seqs;
      continue;
    }
    // collected_at never decreases in seq order (docs/buffer.md): expiry relies on it.
    working.last_collected_at = std::max(working.last_collected_at, now);
    if (auto r = insert_row(working.next_seq, e, working.last_collected_at); !r) return r;
    ++working.next_seq;
    ++assigned;
  }
  seqs.last_seq = seqs.first_seq + assigned - 1;
  outcome = seqs;
  return {};
}

Result<void> SqliteBuffer::Impl::insert_row(uint64_t seq, const NewEvent& e, int64_t collected_at) {
  auto insert = insert_statement(seq);
  if (!insert) return insert.error();
  Stmt& st = **insert;
  const std::string_view stored = write_sealer.seal(
      {seq, static_cast<int64_t>(e.kind), e.priority, e.event_time_ns, collected_at}, e.body);
  st.bind(1, static_cast<int64_t>(seq))
      .bind(2, static_cast<int64_t>(e.kind))
      .bind(3, e.priority)
      .bind(4, e.event_time_ns)
      .bind(5, collected_at)
      .bind(6, stored);
  int rc = st.step();
  st.reset();
  if (rc != SQLITE_DONE) {
    return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path + ": append");
  }
  count_in(seq, e.kind, e.priority, stored.size());
  return {};
}

Result<bool> SqliteBuffer::Impl::has_seq(uint64_t seq) {
  if (!working.segments.contains(segment_of(seq))) return false;
  bool found = false;
  auto r = sqlite::for_each_row(
      writer, "SELECT 1 FROM " + sqlite::segment_table(segment_of(seq)) + " WHERE seq = ?1",
      {static_cast<int64_t>(seq)}, [&](Stmt&) {
        found = true;
        return false;
      });
  if (!r) return r.error();
  return found;
}

Result<bool> SqliteBuffer::Impl::seen_before(const NewEvent& e) {
  if (!e.maybe_duplicate || opt.identity_window == 0) return false;
  find_identity_stmt.bind(1, std::string_view(e.identity));
  int rc = find_identity_stmt.step();
  find_identity_stmt.reset();
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path + ": identities");
}

Result<void> SqliteBuffer::Impl::remember(const NewEvent& e) {
  if (opt.identity_window == 0) return {};
  put_identity_stmt.bind(1, static_cast<int64_t>(working.identity_next % opt.identity_window))
      .bind(2, std::string_view(e.identity));
  int rc = put_identity_stmt.step();
  put_identity_stmt.reset();
  if (rc != SQLITE_DONE) {
    return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path + ": identities");
  }
  ++working.identity_next;
  return {};
}

Result<void> SqliteBuffer::Impl::add_quarantine(const QuarantineEntry& q) {
  std::string_view kept(q.payload);
  kept = kept.substr(0, opt.quarantine_keep_bytes);
  add_quarantine_stmt.bind(1, clock.now_ns())
      .bind_text(2, q.source)
      .bind_text(3, q.subject)
      .bind_text(4, q.reason)
      .bind(5, static_cast<int64_t>(q.payload.size()))
      .bind(6, kept);
  int rc = add_quarantine_stmt.step();
  add_quarantine_stmt.reset();
  if (rc == SQLITE_DONE) {
    trim_quarantine_stmt.bind(1, static_cast<int64_t>(opt.quarantine_max_rows));
    rc = trim_quarantine_stmt.step();
    trim_quarantine_stmt.reset();
  }
  if (rc != SQLITE_DONE) {
    return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path + ": quarantine");
  }
  ++working.quarantined_total;
  return {};
}

Result<void> SqliteBuffer::Impl::put_progress(const std::string& key,
                                              const std::optional<std::string>& value) {
  Stmt& st = value ? put_progress_stmt : erase_progress_stmt;
  st.bind_text(1, key);
  if (value) st.bind_text(2, *value);
  int rc = st.step();
  st.reset();
  if (rc != SQLITE_DONE) {
    return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path + ": source progress");
  }
  return {};
}

void SqliteBuffer::Impl::count_in(uint64_t seq, EventKind k, int32_t priority, uint64_t size) {
  working.pending.add(k, priority, size);
  working.segments[segment_of(seq)].add(k, priority, size);
}

void SqliteBuffer::Impl::count_out(uint64_t seq, EventKind k, int32_t priority, uint64_t size) {
  removed_pending = true;
  working.pending.remove(k, priority, size);
  auto it = working.segments.find(segment_of(seq));
  if (it != working.segments.end()) it->second.remove(k, priority, size);
}

// The insert statement for `seq`'s segment, creating the segment table when it is new.
Result<Stmt*> SqliteBuffer::Impl::insert_statement(uint64_t seq) {
  const uint64_t first = segment_of(seq);
  if (insert_segment == first) return &insert_stmt;
  if (!working.segments.contains(first)) {
    if (auto r = writer.exec(sqlite::segment_ddl(first)); !r) return r.error();
    working.segments[first];
  }
  auto st =
      Stmt::prepare(writer, "INSERT INTO " + sqlite::segment_table(first) +
                                " (" OUTPOST_EVENT_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  if (!st) return st.error();
  insert_stmt = std::move(*st);
  insert_segment = first;
  return &insert_stmt;
}

// Writes the meta rows and drop counters that changed since `before`.
Result<void> SqliteBuffer::Impl::persist(const Counters& before) {
  auto put_meta = [&](std::string_view key, uint64_t value) -> Result<void> {
    update_meta_stmt.bind_text(1, key).bind(2, static_cast<int64_t>(value));
    int rc = update_meta_stmt.step();
    update_meta_stmt.reset();
    if (rc != SQLITE_DONE) return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path);
    return {};
  };
  if (working.next_seq != before.next_seq) {
    if (auto r = put_meta("next_seq", working.next_seq); !r) return r;
  }
  if (working.acked_seq != before.acked_seq) {
    if (auto r = put_meta("acked_seq", working.acked_seq); !r) return r;
  }
  if (working.identity_next != before.identity_next) {
    if (auto r = put_meta("identity_next", working.identity_next); !r) return r;
  }
  if (working.duplicates != before.duplicates) {
    if (auto r = put_meta("duplicates", working.duplicates); !r) return r;
  }
  if (working.quarantined_total != before.quarantined_total) {
    if (auto r = put_meta("quarantined_total", working.quarantined_total); !r) return r;
  }
  if (working.age_clock_ns != before.age_clock_ns) {
    if (auto r = put_meta("age_clock_ns", static_cast<uint64_t>(working.age_clock_ns)); !r)
      return r;
  }
  for (int r = 0; r < kDropReasonCount; ++r) {
    for (EventKind k : kAllKinds) {
      uint64_t delta = working.dropped[r][kind_index(k)] - before.dropped[r][kind_index(k)];
      if (delta == 0) continue;
      add_drops_stmt.bind_text(1, drop_reason_name(static_cast<DropReason>(r)))
          .bind(2, static_cast<int64_t>(k))
          .bind(3, static_cast<int64_t>(delta));
      int rc = add_drops_stmt.step();
      add_drops_stmt.reset();
      if (rc != SQLITE_DONE) return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path);
    }
  }
  for (const auto& [key, count] : working.origin_dropped) {
    auto was = before.origin_dropped.find(key);
    const uint64_t delta = count - (was == before.origin_dropped.end() ? 0 : was->second);
    if (delta == 0) continue;
    auto st = Stmt::prepare(writer,
                            "INSERT INTO origin_drops (origin, reason, count) VALUES (?1, ?2, ?3) "
                            "ON CONFLICT (origin, reason) DO UPDATE SET count = count + "
                            "excluded.count");
    if (!st) return st.error();
    st->bind_text(1, key.first)
        .bind_text(2, drop_reason_name(static_cast<DropReason>(key.second)))
        .bind(3, static_cast<int64_t>(delta));
    if (int rc = st->step(); rc != SQLITE_DONE) {
      return sqlite::error_from(rc, writer.handle(), "buffer " + opt.path);
    }
  }
  if (working.next_seq - 1 > working.reserved_seq) {
    // Reserve the next block of seqs in the state file before any of them is committed.
    auto state = sqlite::read_state_file(opt.path);
    state.reserved_seq = working.next_seq - 1 + kSeqReserveBlock;
    if (auto r = sqlite::write_state_file(opt.path, state); !r) return r;
    working.reserved_seq = state.reserved_seq;
  }
  return {};
}

// Runs `body` in one write transaction over `working`; `committed` takes the result only if
// the commit succeeds.
Result<void> SqliteBuffer::Impl::transact(const std::function<Result<void>()>& body) {
  std::optional<DropCounts> folded;
  auto attempt = [&]() -> Result<void> {
    if (auto r = writer.exec("BEGIN IMMEDIATE"); !r) return r;
    // Another process (buffer import/purge) may have committed since our last transaction.
    auto version = writer.query_int("PRAGMA data_version");
    if (!version) return version.error();
    removed_pending = false;
    if (*version != data_version) {
      ++removal_epoch;  // what it removed is not known: no read range is trusted any more
      if (auto r = load_counters(working); !r) return r;
      std::lock_guard lock(mu);
      committed = working;
    } else {
      working = committed;
    }
    {
      // Drops counted outside a transaction go into this one (and back if it fails).
      std::lock_guard lock(mu);
      if (has_unsaved_drops) {
        for (int r = 0; r < kDropReasonCount; ++r) {
          for (int k = 0; k < kKindCount; ++k) working.dropped[r][k] += unsaved_drops[r][k];
        }
        folded = unsaved_drops;
        unsaved_drops = {};
        has_unsaved_drops = false;
      }
    }
    if (tally_snapshot_may_exist) {  // this transaction changes what it describes
      if (auto r = writer.exec(
              "DELETE FROM tally_snapshot; DELETE FROM meta WHERE key = 'tally_snapshot_of'");
          !r) {
        return r;
      }
    }
    if (auto r = body(); !r) return r;
    if (auto r = drop_empty_segments(); !r) return r;
    if (auto r = persist(committed); !r) return r;
    return writer.exec("COMMIT");
  };
  Result<void> result = attempt();
  if (!result) {
    if (folded) {
      std::lock_guard lock(mu);
      for (int r = 0; r < kDropReasonCount; ++r) {
        for (int k = 0; k < kKindCount; ++k) unsaved_drops[r][k] += (*folded)[r][k];
      }
      has_unsaved_drops = true;
    }
    (void)writer.exec("ROLLBACK");
    insert_stmt = Stmt();  // its table may have been created by the rolled-back transaction
    insert_segment.reset();
    note_error(result.error());
    return result;
  }
  tally_snapshot_may_exist = false;
  // After the commit, not before: a read that began before it saw the removed rows and
  // carries the older epoch.
  if (removed_pending) ++removal_epoch;
  std::lock_guard lock(mu);
  committed = working;
  return result;
}

void SqliteBuffer::Impl::run_group(std::vector<Job>& jobs) {
  std::vector<std::optional<Result<AppendResult>>> append_outcomes(jobs.size());
  std::vector<Result<uint64_t>> removed(jobs.size(), uint64_t{0});
  std::vector<bool> pre_refused(jobs.size(), false);
  const bool expiry_due = clock.mono_ns() >= next_expiry_ns;
  check_disk_recovered();
  if (jobs.empty() && !expiry_due) {  // an idle tick
    if (auto r = save_drops(); !r) log->warn("{}", r.error().describe());
    return;
  }

  // The floor kept for acks (disk_space.hpp): appends that would take the disk below it are
  // refused before they are tried, and so is every append while the disk is refused.
  bool any_append = false;
  for (const Job& j : jobs) any_append = any_append || std::holds_alternative<AppendJob>(j);
  if (any_append) {
    std::optional<std::string> refusing;
    {
      std::lock_guard lock(mu);
      refusing = disk_refusal;
    }
    const uint64_t room = refusing ? 0 : headroom();
    uint64_t need = 0;
    for (size_t i = 0; i < jobs.size(); ++i) {
      auto* a = std::get_if<AppendJob>(&jobs[i]);
      if (a == nullptr || a->events.empty()) continue;
      // Rows cost more than their bodies (headers, b-tree pages), and they are written twice:
      // into the WAL, and by the checkpoint into the database file.
      need += 2 * (a->body_bytes + a->body_bytes / 2 + 64 * a->events.size());
      if (!refusing && room >= disk.reserve_bytes() + need) continue;
      if (!refusing) {
        refusing = "buffer " + opt.path + ": the disk is nearly full (" + format_bytes(room) +
                   " left to the buffer, " + format_bytes(disk.reserve_bytes()) +
                   " kept for acknowledgements); appends are refused until acknowledged "
                   "events free space";
        refuse_for_disk(*refusing);
      }
      append_outcomes[i] = make_error(buffer_errc::disk_full, *refusing);
      pre_refused[i] = true;
    }
  }

  // While the disk is full, acks go first and in small steps: one large delete would grow
  // the WAL into the very space it is meant to free.
  std::vector<bool> done_early(jobs.size(), false);
  // A group of acks only commits without fsync: losing an ack to a power cut means the
  // events are sent again, and the gateway drops them as duplicates by (agent_id, seq).
  // The next durable commit syncs the WAL, and these frames with it.
  const bool acks_only = !jobs.empty() && std::all_of(jobs.begin(), jobs.end(), [](const Job& j) {
    return std::holds_alternative<AckJob>(j);
  });
  const bool relax = acks_only && opt.synchronous >= Synchronous::full;
  if (relax) (void)writer.exec("PRAGMA synchronous=NORMAL");
  if (disk_full_logged) {
    for (size_t i = 0; i < jobs.size(); ++i) {
      if (auto* ack = std::get_if<AckJob>(&jobs[i])) {
        removed[i] = ack_in_chunks(ack->up_to_seq);
        done_early[i] = true;
      }
    }
  }
  Result<void> result = transact([&]() -> Result<void> {
    for (size_t i = 0; i < jobs.size(); ++i) {
      Job& job = jobs[i];
      Result<void> r;
      if (done_early[i]) continue;
      if (auto* a = std::get_if<AppendJob>(&job)) {
        if (pre_refused[i]) continue;  // refused for the disk, above
        r = apply(*a, append_outcomes[i]);
        if (r && a->progress && append_outcomes[i] && *append_outcomes[i]) {
          r = put_progress(a->progress->key, a->progress->value);
        }
      } else if (auto* ack = std::get_if<AckJob>(&job)) {
        removed[i] = acknowledge(ack->up_to_seq);
        if (!removed[i]) return removed[i].error();
      } else if (auto* purge = std::get_if<PurgeJob>(&job)) {
        uint64_t max_seq = std::numeric_limits<uint64_t>::max();
        if (purge->collected_before_ns) {
          auto boundary = last_seq_collected_before(*purge->collected_before_ns);
          if (!boundary) return boundary.error();
          max_seq = boundary->value_or(0);
        }
        removed[i] = max_seq == 0 ? Result<uint64_t>(uint64_t{0})
                                  : remove_rows(max_seq, purge->kind, DropReason::purged);
        if (!removed[i]) return removed[i].error();
      } else if (auto* q = std::get_if<QuarantineJob>(&job)) {
        r = add_quarantine(q->entry);
      } else if (auto* p = std::get_if<EraseProgressJob>(&job)) {
        r = put_progress(p->key, std::nullopt);
      } else if (auto* t = std::get_if<TamperedJob>(&job)) {
        r = quarantine_tampered(t->seqs);
      } else {
        r = expire();
      }
      if (!r) return r;
    }
    if (expiry_due) return expire();
    return {};
  });
  if (!result && result.error().code == buffer_errc::disk_full) {
    refuse_for_disk("buffer " + opt.path + ": " + result.error().describe() +
                    "; appends are refused until acknowledged events free space");
    release_reserve();
    // Acks are what frees the disk: retry them alone, in chunks small enough to fit.
    for (size_t i = 0; i < jobs.size(); ++i) {
      if (auto* ack = std::get_if<AckJob>(&jobs[i]); ack && !done_early[i]) {
        removed[i] = ack_in_chunks(ack->up_to_seq);
      }
    }
  }
  if (relax) {
    (void)writer.exec(std::string("PRAGMA synchronous=") + synchronous_pragma(opt.synchronous));
  }
  // Before the waiters hear of it: an append right after an ack that freed the disk is taken.
  check_disk_recovered();
  if (result && !disk_full_logged && !disk.held()) disk.hold();

  // Appends refused after append() returned: their sources may have told their clients
  // already, so the refusal is counted (and persisted at once, below).
  bool counted = false;
  {
    std::lock_guard lock(mu);
    for (size_t i = 0; i < jobs.size(); ++i) {
      auto* a = std::get_if<AppendJob>(&jobs[i]);
      if (a == nullptr) continue;
      // Nothing of a failed transaction was stored, whatever apply() had said.
      if (!result && !pre_refused[i]) append_outcomes[i] = result.error();
      if (append_outcomes[i] && !*append_outcomes[i] &&
          append_outcomes[i]->error().code != buffer_errc::full) {  // full: counted by apply()
        count_refused_locked(a->events, a->acceptance, append_outcomes[i]->error(), false);
        counted = counted || has_unsaved_drops;
      }
    }
  }
  if (counted) {
    if (auto r = save_drops(); !r) log->warn("{}", r.error().describe());
  }

  // Tell each producer and waiter how its part went; never let a callback kill the writer.
  for (size_t i = 0; i < jobs.size(); ++i) {
    Job& job = jobs[i];
    try {
      if (auto* a = std::get_if<AppendJob>(&job)) {
        a->done(*append_outcomes[i]);
      } else if (auto* ack = std::get_if<AckJob>(&job)) {
        // An ack done in the group's transaction is done only if that transaction committed
        // (an I/O error rolls it back; buffer_faults_test). Acks retried alone after a full
        // disk, or done early in chunks, have their own outcome.
        const bool own_outcome =
            done_early[i] || (!result && result.error().code == buffer_errc::disk_full);
        if (!result && !own_outcome) {
          ack->done.set_value(Result<void>(result.error()));
        } else {
          ack->done.set_value(removed[i] ? Result<void>() : Result<void>(removed[i].error()));
        }
      } else if (auto* purge = std::get_if<PurgeJob>(&job)) {
        purge->done.set_value(result ? removed[i] : Result<uint64_t>(result.error()));
      } else if (auto* exp = std::get_if<ExpireJob>(&job)) {
        exp->done.set_value(result ? Result<void>() : Result<void>(result.error()));
      } else if (auto* q = std::get_if<QuarantineJob>(&job)) {
        q->done.set_value(result ? Result<void>() : Result<void>(result.error()));
      } else if (auto* p = std::get_if<EraseProgressJob>(&job)) {
        p->done.set_value(result ? Result<void>() : Result<void>(result.error()));
      } else if (auto* t = std::get_if<TamperedJob>(&job)) {
        t->done.set_value(result ? Result<void>() : Result<void>(result.error()));
      }
    } catch (const std::exception& e) {
      log->error("an append callback threw: {}", e.what());
    }
  }
}

// ---- every acceptance counted ---------------------------------------------------------------

bool SqliteBuffer::Impl::all_reject(const std::vector<NewEvent>& events) const {
  for (const NewEvent& e : events) {
    if (opt.kinds[kind_index(e.kind)].policy != FullPolicy::reject) return false;
  }
  return true;
}

void SqliteBuffer::Impl::count_refused_locked(const std::vector<NewEvent>& events,
                                              Acceptance acceptance, const Error& e, bool at_once) {
  if (acceptance == Acceptance::on_commit) return;
  if (at_once && acceptance == Acceptance::unless_refused) return;
  DropReason reason = DropReason::write_failed;
  if (e.code == buffer_errc::full) reason = DropReason::rejected_full;
  if (e.code == buffer_errc::disk_full) reason = DropReason::disk_full;
  if (e.code == buffer_errc::queue_full) reason = DropReason::queue_full;
  if (e.code == buffer_errc::closed) reason = DropReason::closed;
  for (const NewEvent& ev : events) ++unsaved_drops[static_cast<int>(reason)][kind_index(ev.kind)];
  has_unsaved_drops = has_unsaved_drops || !events.empty();
}

Result<void> SqliteBuffer::Impl::save_drops() {
  {
    std::lock_guard lock(mu);
    if (!has_unsaved_drops) return {};
  }
  if (!healthy) return {};
  auto r = transact([] { return Result<void>(); });
  if (!r && r.error().code == buffer_errc::disk_full && disk.held()) {
    release_reserve();  // counts of events already answered for: what the reserve is for
    r = transact([] { return Result<void>(); });
  }
  return r;
}

}  // namespace outpost::agent
