#include "agent/buffer/sqlite_buffer.hpp"

#include "agent/buffer/sqlite_buffer_impl.hpp"

namespace outpost::agent {

Result<std::unique_ptr<SqliteBuffer>> SqliteBuffer::open(BufferOptions options,
                                                         const Clock& clock) {
  if (options.path.empty()) {
    return make_error(buffer_errc::io, "buffer path is empty: set buffer.path");
  }
  auto impl = std::make_unique<Impl>(std::move(options), clock);
  if (impl->opt.exclusive) {
    auto locked = FileLock::acquire(lock_path(impl->opt.path), "the buffer " + impl->opt.path);
    if (!locked) return make_error(buffer_errc::busy, locked.error().message);
    impl->file_lock = std::move(*locked);
  }
  if (auto r = impl->open_file(); !r) return r.error();
  if (auto r = impl->prepare_statements(); !r) return r.error();
  {
    // One snapshot: another process (the agent, an import) may commit meanwhile.
    sqlite::ReadTransaction snapshot(impl->writer);
    if (auto r = impl->load_counters(impl->working); !r) return r.error();
  }
  impl->committed = impl->working;
  if (impl->opt.require_keys) {
    if (auto r = impl->check_keys(); !r) return r.error();
  }
  impl->disk.hold();
  impl->start_age_clock();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<SqliteBuffer>(new SqliteBuffer(std::move(impl)));
}

SqliteBuffer::SqliteBuffer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SqliteBuffer::~SqliteBuffer() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->thread.join();
}

// ---- producers ------------------------------------------------------------------------------

void SqliteBuffer::append(std::vector<NewEvent> events, AppendCallback done, Commit when,
                          Acceptance acceptance) {
  impl_->enqueue(std::move(events), std::move(done), when, acceptance, std::nullopt);
}

void SqliteBuffer::append_with_progress(std::vector<NewEvent> events, SourceProgress progress,
                                        AppendCallback done) {
  impl_->enqueue(std::move(events), std::move(done), Commit::now, Acceptance::on_commit,
                 std::move(progress));
}

void SqliteBuffer::Impl::enqueue(std::vector<NewEvent> events, AppendCallback done, Commit when,
                                 Acceptance acceptance, std::optional<SourceProgress> progress) {
  Impl& m = *this;
  uint64_t bytes = 0;
  for (const NewEvent& e : events) bytes += e.body.size();
  // What the rows will hold: sealed bodies are larger (row_seal.hpp).
  if (m.write_sealer.sealing()) bytes += kSealOverheadBytes * events.size();
  std::optional<Error> refused;
  bool notify = false;
  {
    std::lock_guard lock(m.mu);
    if (m.stopping) {
      refused = make_error(buffer_errc::closed, "buffer " + m.opt.path + " is closing");
    } else if (!m.healthy) {
      refused = make_error(buffer_errc::corrupt,
                           "buffer " + m.opt.path + " hit corruption; the agent must restart");
    } else if (m.disk_refusal && !events.empty()) {
      refused = make_error(buffer_errc::disk_full, *m.disk_refusal);
    } else if (!m.queue.empty() && m.queued_events + events.size() > m.opt.queue_max_events) {
      refused = make_error(buffer_errc::queue_full,
                           "buffer " + m.opt.path + ": " + std::to_string(m.queued_events) +
                               " events already wait for the disk; try again shortly");
    } else if (!events.empty() &&
               m.committed.pending.total_bytes() + m.queued_bytes + bytes > m.opt.max_bytes &&
               m.all_reject(events)) {
      // Known now, so that the source can still tell its client (503) instead of the writer
      // finding out after a 202. The writer checks again with the exact figures.
      refused = make_error(buffer_errc::full,
                           "buffer " + m.opt.path + " is full (" +
                               std::to_string(m.committed.pending.total_bytes()) + " of " +
                               std::to_string(m.opt.max_bytes) + " bytes, buffer.max_bytes)");
    } else {
      // Wake the writer only when it has something new to decide: the first job of a group
      // (it then lingers until commit_interval) or a full group. Waking it for every append
      // cost a context switch per HTTP hit.
      const bool urgent = when == Commit::now;
      notify = urgent || m.queue.empty() ||
               (m.queued_events < m.opt.commit_max_events &&
                m.queued_events + events.size() >= m.opt.commit_max_events);
      m.queued_events += events.size();
      m.queued_bytes += bytes;
      if (urgent) ++m.queued_urgent;
      m.queue.emplace_back(AppendJob{std::move(events), std::move(done), bytes, urgent, acceptance,
                                     std::move(progress)});
      m.enqueued_at.push_back(std::chrono::steady_clock::now());
    }
    if (refused) m.count_refused_locked(events, acceptance, *refused, /*at_once=*/true);
  }
  if (refused) {
    done(*refused);
    return;
  }
  if (notify) m.wake.notify_one();
}

template <typename JobT>
auto SqliteBuffer::Impl::submit(JobT job) -> decltype(job.done.get_future()) {
  auto future = job.done.get_future();
  {
    std::lock_guard lock(mu);
    if (stopping) {
      job.done.set_value(make_error(buffer_errc::closed, "buffer " + opt.path + " is closing"));
      return future;
    }
    queue.emplace_back(std::move(job));
    enqueued_at.push_back(std::chrono::steady_clock::now());
    ++queued_urgent;
  }
  wake.notify_one();
  return future;
}

template <typename JobT>
auto SqliteBuffer::Impl::submit_and_wait(JobT job) -> decltype(job.done.get_future().get()) {
  return submit(std::move(job)).get();
}

Result<void> SqliteBuffer::ack(uint64_t up_to_seq) {
  return impl_->submit_and_wait(AckJob{up_to_seq, {}});
}

std::future<Result<void>> SqliteBuffer::ack_async(uint64_t up_to_seq) {
  return impl_->submit(AckJob{up_to_seq, {}});
}

Result<uint64_t> SqliteBuffer::purge(std::optional<EventKind> kind,
                                     std::optional<int64_t> collected_before_ns) {
  return impl_->submit_and_wait(PurgeJob{kind, collected_before_ns, {}});
}

Result<void> SqliteBuffer::expire_now() { return impl_->submit_and_wait(ExpireJob{}); }

Result<void> SqliteBuffer::quarantine(QuarantineEntry entry) {
  return impl_->submit_and_wait(QuarantineJob{std::move(entry), {}});
}

Result<void> SqliteBuffer::erase_progress(std::string_view key) {
  return impl_->submit_and_wait(EraseProgressJob{std::string(key), {}});
}

Result<std::vector<SourceProgress>> SqliteBuffer::read_progress(std::string_view prefix) {
  std::vector<SourceProgress> rows;
  std::lock_guard lock(impl_->read_mu);
  auto st = Stmt::prepare(impl_->reader,
                          "SELECT key, value FROM source_progress "
                          "WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key");
  if (!st) return st.error();
  st->bind_text(1, prefix);
  int rc;
  while ((rc = st->step()) == SQLITE_ROW) {
    rows.push_back(SourceProgress{st->col_blob(0), st->col_blob(1)});
  }
  if (rc != SQLITE_DONE) {
    return sqlite::error_from(rc, impl_->reader.handle(), "buffer " + impl_->opt.path);
  }
  return rows;
}

size_t SqliteBuffer::queued_events() const {
  std::lock_guard lock(impl_->mu);
  return impl_->queued_events;
}

bool SqliteBuffer::healthy() const { return impl_->healthy; }

// ---- readers --------------------------------------------------------------------------------

Result<std::vector<StoredEvent>> SqliteBuffer::read_batch(uint64_t after_seq, size_t max_events,
                                                          size_t max_bytes) {
  std::vector<StoredEvent> out;
  auto n = impl_->scan_batch(after_seq, max_events, max_bytes, [&](const StoredEventRef& e) {
    out.push_back(
        {e.seq, e.kind, e.priority, e.event_time_ns, e.collected_at_ns, std::string(e.body)});
    return true;
  });
  if (!n) return n.error();
  return out;
}

Result<size_t> SqliteBuffer::visit_batch(uint64_t after_seq, size_t max_events, size_t max_bytes,
                                         const EventVisitor& visit) {
  return impl_->scan_batch(after_seq, max_events, max_bytes, visit);
}

Result<size_t> SqliteBuffer::visit_lane(uint64_t after_seq, size_t max_events, size_t max_bytes,
                                        const LaneFilter& in_lane, const EventVisitor& visit,
                                        uint64_t& scanned) {
  scanned = after_seq;
  return impl_->scan_batch(after_seq, max_events, max_bytes, visit, &in_lane, &scanned);
}

// read_batch and visit_batch: the rows after `after_seq`, each seen by `visit` in place, and
// remembered (seq, kind, priority, size) for the acks that will follow (remember_read).
template <typename Visit>
Result<size_t> SqliteBuffer::Impl::scan_batch(uint64_t after_seq, size_t max_events,
                                              size_t max_bytes, Visit&& visit,
                                              const LaneFilter* in_lane, uint64_t* scanned) {
  constexpr size_t kMaxPassedOver = 50'000;  // a lane's scan returns after this many others
  std::lock_guard lock(read_mu);
  size_t passed_over = 0;
  if (max_events == 0) return size_t{0};
  size_t bytes = 0;
  Result<void> r;
  std::vector<ReadRow> rows;
  std::vector<uint64_t> tampered;
  std::optional<Error> missing;
  rows.reserve(std::min<size_t>(max_events, 4096));
  const uint64_t epoch = removal_epoch.load();  // before the snapshot (see transact())
  {
    sqlite::ReadTransaction snapshot(reader);
    r = sqlite::scan_events(reader, after_seq, std::nullopt, [&](Stmt& row) {
      const auto* body = static_cast<const char*>(sqlite3_column_blob(row.handle(), 5));
      const size_t size = static_cast<size_t>(sqlite3_column_bytes(row.handle(), 5));
      StoredEventRef e;
      e.seq = static_cast<uint64_t>(row.col_int(0));
      const int64_t kind = row.col_int(1);
      e.kind = kind_from_number(kind).value_or(EventKind::json);
      e.priority = static_cast<int32_t>(row.col_int(2));
      if (in_lane != nullptr && !(*in_lane)(e.kind, e.priority)) {
        *scanned = e.seq;
        return ++passed_over < kMaxPassedOver;
      }
      if (!rows.empty() && bytes + size > max_bytes) return false;
      e.event_time_ns = row.col_int(3);
      e.collected_at_ns = row.col_int(4);
      const std::string_view stored(body == nullptr ? "" : body, size);
      const RowMeta meta{e.seq, kind, e.priority, e.event_time_ns, e.collected_at_ns};
      switch (read_sealer.open(meta, stored, e.body)) {
        case RowSealer::Opened::clear:
        case RowSealer::Opened::ok:
          break;
        case RowSealer::Opened::failed:
          tampered.push_back(e.seq);  // never forwarded
          if (scanned != nullptr) *scanned = e.seq;
          return true;
        case RowSealer::Opened::unknown_key:
          missing = make_error(buffer_errc::key_missing,
                               "buffer " + opt.path + ": event seq " + std::to_string(e.seq) +
                                   " is sealed with key id " +
                                   tls::AeadKey::id_hex_of(*sealed_key_id(stored)) +
                                   ", which none of the configured keys has (buffer.key_file, "
                                   "buffer.old_key_files): it waits until that key is given");
          return false;
      }
      if (!visit(e)) return false;  // not taken: not in this batch
      if (scanned != nullptr) *scanned = e.seq;
      rows.push_back({e.seq, size, kind, e.priority});
      bytes += size;
      return rows.size() < max_events;
    });
  }
  if (!r) {
    note_error(r.error());
    return r.error();
  }
  if (!tampered.empty()) {
    for (uint64_t seq : tampered) {
      log->error(
          "buffer {}: event seq {} does not authenticate (its bytes or its metadata were "
          "changed): quarantined, counted as dropped (tampered), not forwarded",
          opt.path, seq);
    }
    (void)submit(TamperedJob{std::move(tampered), {}});  // before any ack of this batch
  }
  if (missing && rows.empty()) return *missing;
  const size_t seen = rows.size();
  if (!rows.empty() && in_lane == nullptr) remember_read(after_seq, epoch, std::move(rows));
  return seen;
}

Result<BufferStats> SqliteBuffer::stats() {
  Impl& m = *impl_;
  BufferStats s;
  s.agent_id = m.opt.agent_id;
  s.schema_version = sqlite::kSchemaVersion;
  {
    std::lock_guard lock(m.mu);
    const Counters& c = m.committed;
    s.pending_events = c.pending.total_events();
    s.pending_bytes = c.pending.total_bytes();
    s.acked_seq = c.acked_seq;
    s.next_seq = c.next_seq;
    s.duplicates = c.duplicates;
    s.quarantined_total = c.quarantined_total;
    for (int r = 0; r < kDropReasonCount; ++r) {
      for (EventKind k : kAllKinds) {
        if (uint64_t n = c.dropped[r][kind_index(k)] + m.unsaved_drops[r][kind_index(k)]) {
          s.dropped.push_back({static_cast<DropReason>(r), k, n});
        }
      }
    }
    for (const auto& [key, n] : c.origin_dropped) {
      s.origin_dropped.push_back({key.first, static_cast<DropReason>(key.second), n});
    }
    for (EventKind k : kAllKinds) {
      if (c.pending.events[kind_index(k)] != 0) {
        GroupStats g;
        g.kind = k;
        g.events = c.pending.events[kind_index(k)];
        g.bytes = c.pending.bytes[kind_index(k)];
        s.groups.push_back(g);
      }
    }
  }
  std::lock_guard lock(m.read_mu);
  sqlite::ReadTransaction snapshot(m.reader);
  auto oldest = sqlite::scan_events(m.reader, 0, std::nullopt, [&](Stmt& row) {
    s.oldest_collected_at_ns = row.col_int(4);
    s.oldest_event_time_ns = row.col_int(3);
    return false;
  });
  if (!oldest) return oldest.error();
  auto quarantined = m.reader.query_int("SELECT count(*) FROM quarantine");
  if (!quarantined) return quarantined.error();
  s.quarantine_rows = static_cast<uint64_t>(*quarantined);
  s.corrupt_recoveries = m.corrupt_recoveries;
  s.corrupt_lost = m.corrupt_lost;
  struct stat st {};
  if (::stat(m.opt.path.c_str(), &st) == 0) s.file_bytes += static_cast<uint64_t>(st.st_size);
  if (::stat((m.opt.path + "-wal").c_str(), &st) == 0) {
    s.file_bytes += static_cast<uint64_t>(st.st_size);
  }
  return s;
}

}  // namespace outpost::agent
