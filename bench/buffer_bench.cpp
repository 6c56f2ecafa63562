// buffer_bench: what the agent's buffer sustains on this machine, beside the reference limit.
//
//   append     events/s and MB/s of 200-byte events through SqliteBuffer with its defaults
//              (synchronous=FULL, group commit), producers keeping appends in flight
//   reference  plain batched SQLite inserts of the same rows (WAL, synchronous=FULL,
//              one transaction per 1000 rows) into a table of the same columns
//   drain      read_batch(--batch events) on one thread and ack() on another, as the
//              pipelined forwarder does (it reads the next batch while acks come back)
//   peak RSS   of the whole process
//
// Each figure is the median of --runs runs (default 3). The last lines are the figures.
// --ack-inline acks on the reading thread instead, one batch at a time (no pipelining).
// --encryption CIPHER (chacha20-poly1305 or aes-256-gcm): each run also appends and drains with
// the rows sealed (docs/buffer.md, "Encryption at rest"), right after the run without, and the
// last lines give sealed against clear, and what the cipher alone costs per event (sealing and
// opening one event's body in a loop over tls::Aead, without the buffer).
// Usage: buffer_bench [--events N] [--runs R] [--batch B] [--ack-inline] [--dir DIR]
//                     [--encryption CIPHER]
#include <sqlite3.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/buffer/sqlite_buffer.hpp"
#include "bench/bench_support.hpp"

using namespace outpost;
using namespace outpost::agent;
using steady = std::chrono::steady_clock;
using bench::median;

namespace {

constexpr size_t kEventBytes = 200;

double seconds_since(steady::time_point t0) {
  return std::chrono::duration<double>(steady::now() - t0).count();
}

NewEvent bench_event(uint64_t i) {
  NewEvent e;
  e.kind = kAllKinds[i % 3];
  e.priority = static_cast<int32_t>(i % 2);
  e.event_time_ns = static_cast<int64_t>(i);
  e.body.resize(kEventBytes);
  for (size_t k = 0; k < kEventBytes; ++k) e.body[k] = static_cast<char>('a' + (i + k) % 26);
  return e;
}

double reference_inserts(const std::string& path, uint64_t events) {
  std::filesystem::remove(path);
  std::filesystem::remove(path + "-wal");
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db,
               "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
               "CREATE TABLE events (seq INTEGER PRIMARY KEY, kind INTEGER, priority INTEGER,"
               " event_time INTEGER, collected_at INTEGER, body BLOB)",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6)", -1, &st, nullptr);
  std::vector<NewEvent> rows;
  for (uint64_t i = 0; i < 1000; ++i) rows.push_back(bench_event(i));
  auto t0 = steady::now();
  for (uint64_t i = 0; i < events;) {
    sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    for (uint64_t k = 0; k < 1000 && i < events; ++k, ++i) {
      const NewEvent& e = rows[i % 1000];
      sqlite3_bind_int64(st, 1, static_cast<int64_t>(i + 1));
      sqlite3_bind_int64(st, 2, static_cast<int64_t>(e.kind));
      sqlite3_bind_int64(st, 3, e.priority);
      sqlite3_bind_int64(st, 4, e.event_time_ns);
      sqlite3_bind_int64(st, 5, static_cast<int64_t>(i));
      sqlite3_bind_blob(st, 6, e.body.data(), static_cast<int>(e.body.size()), SQLITE_STATIC);
      sqlite3_step(st);
      sqlite3_reset(st);
    }
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  }
  double rate = static_cast<double>(events) / seconds_since(t0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return rate;
}

// The cipher alone: microseconds to seal, and to open, one event's body (kEventBytes, with a
// row's 36 bytes of additional data), over `n` events.
std::pair<double, double> cipher_cost(tls::AeadCipher cipher, int n = 200'000) {
  tls::Aead aead(*tls::AeadKey::from_bytes(std::string(32, 'k')), cipher);
  const std::string plain = bench_event(1).body, aad(36, 'a');
  unsigned char nonce[tls::kAeadNonceBytes] = {};
  std::string sealed, opened;
  auto t0 = steady::now();
  for (int i = 0; i < n; ++i) {
    nonce[11] = static_cast<unsigned char>(i);
    sealed.clear();
    aead.seal(nonce, aad, plain, sealed);
  }
  const double seal_s = seconds_since(t0);
  t0 = steady::now();
  for (int i = 0; i < n; ++i) {
    opened.clear();
    if (!aead.open(nonce, aad, sealed, opened)) std::exit(1);
  }
  return {seal_s / n * 1e6, seconds_since(t0) / n * 1e6};
}

struct BufferRun {
  double append_rate = 0;
  double drain_rate = 0;
  double read_share = 0;                      // of the drain time, spent in read_batch
  double reopen_clean = 0, reopen_crash = 0;  // seconds to open with the backlog pending
};

BufferRun buffer_run(const std::string& path, uint64_t events, size_t batch_events, bool ack_inline,
                     const BufferEncryption& encryption = {}) {
  for (const char* suffix : {"", "-wal", "-shm", ".state", ".reserve"}) {
    std::filesystem::remove(path + suffix);
  }
  BufferOptions o;  // the defaults an agent runs with
  o.path = path;
  o.agent_id = "bench";
  o.max_bytes = 64ULL << 30;
  o.encryption = encryption;
  SystemClock clock;
  auto opened = SqliteBuffer::open(o, clock);
  if (!opened) {
    std::fprintf(stderr, "open: %s\n", opened.error().describe().c_str());
    std::exit(1);
  }
  std::unique_ptr<SqliteBuffer> owner = std::move(*opened);
  SqliteBuffer* b = owner.get();
  std::vector<NewEvent> templates;
  for (uint64_t i = 0; i < 1000; ++i) templates.push_back(bench_event(i));

  // Producers hand in batches of 100 and keep up to 64 appends in flight, like the sources.
  BufferRun out;
  auto t0 = steady::now();
  std::deque<std::future<Result<AppendResult>>> in_flight;
  for (uint64_t i = 0; i < events; i += 100) {
    std::vector<NewEvent> batch(templates.begin() + static_cast<long>(i % 1000),
                                templates.begin() + static_cast<long>(i % 1000 + 100));
    in_flight.push_back(b->append(std::move(batch)));
    while (in_flight.size() > 64) {
      if (!in_flight.front().get()) std::exit(1);
      in_flight.pop_front();
    }
  }
  while (!in_flight.empty()) {
    if (!in_flight.front().get()) std::exit(1);
    in_flight.pop_front();
  }
  out.append_rate = static_cast<double>(events) / seconds_since(t0);

  // Reopening with the whole backlog pending: after a clean close, which leaves the pending
  // tallies in the file, and as after a crash, when the open counts every pending event.
  auto reopen = [&]() -> double {
    owner.reset();
    const auto t = steady::now();
    auto again = SqliteBuffer::open(o, clock);
    if (!again) std::exit(1);
    owner = std::move(*again);
    b = owner.get();
    return seconds_since(t);
  };
  out.reopen_clean = reopen();
  owner.reset();
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db, "DELETE FROM meta WHERE key = 'tally_snapshot_of'", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  out.reopen_crash = reopen();

  auto t1 = steady::now();
  uint64_t drained = 0, cursor = 0;
  double reading = 0;
  // The acker acknowledges the newest seq read so far, as a forwarder's acks arrive.
  std::mutex mu;
  std::condition_variable cv;
  uint64_t to_ack = 0;
  bool reading_done = false;
  std::thread acker([&] {
    uint64_t acked = 0;
    std::unique_lock lock(mu);
    while (true) {
      cv.wait(lock, [&] { return to_ack > acked || reading_done; });
      if (to_ack == acked && reading_done) return;
      uint64_t seq = to_ack;
      lock.unlock();
      if (!b->ack(seq)) std::exit(1);
      acked = seq;
      lock.lock();
    }
  });
  while (true) {
    auto tr = steady::now();
    auto batch = b->read_batch(cursor, batch_events, 1 << 20);
    reading += seconds_since(tr);
    if (!batch || batch->empty()) break;
    cursor = batch->back().seq;
    drained += batch->size();
    if (ack_inline) {
      if (!b->ack(cursor)) std::exit(1);
      continue;
    }
    {
      std::lock_guard lock(mu);
      to_ack = cursor;
    }
    cv.notify_one();
  }
  {
    std::lock_guard lock(mu);
    reading_done = true;
  }
  cv.notify_one();
  acker.join();
  out.drain_rate = static_cast<double>(drained) / seconds_since(t1);
  out.read_share = reading / seconds_since(t1);
  if (drained != events) {
    std::fprintf(stderr, "drained %llu of %llu events\n", static_cast<unsigned long long>(drained),
                 static_cast<unsigned long long>(events));
    std::exit(1);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t events = 500'000;
  int runs = 3;
  size_t batch = 1000;
  bool ack_inline = false;
  std::string dir = std::filesystem::temp_directory_path().string();
  std::optional<BufferEncryption> sealed;
  for (int i = 1; i < argc; ++i) {
    const char* flag = argv[i];
    if (!std::strcmp(flag, "--ack-inline")) {
      ack_inline = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "buffer_bench: %s needs a value\n", flag);
      return 2;
    }
    const char* value = argv[++i];
    if (!std::strcmp(flag, "--events")) {
      events = std::stoull(value);
    } else if (!std::strcmp(flag, "--runs")) {
      runs = std::stoi(value);
    } else if (!std::strcmp(flag, "--dir")) {
      dir = value;
    } else if (!std::strcmp(flag, "--batch")) {
      batch = std::stoull(value);
    } else if (!std::strcmp(flag, "--encryption")) {
      auto cipher = tls::parse_aead_cipher(value);
      if (!cipher) {
        std::fprintf(stderr, "buffer_bench: %s\n", cipher.error().message.c_str());
        return 2;
      }
      sealed = BufferEncryption{true, *cipher, {*tls::AeadKey::from_bytes(std::string(32, 'k'))}};
    } else {
      std::fprintf(stderr, "buffer_bench: unknown flag %s\n", flag);
      return 2;
    }
  }
  const std::string path = dir + "/outpost-buffer-bench.db";
  std::vector<double> appends, drains, references, reopens_clean, reopens_crash;
  std::vector<double> sealed_appends, sealed_drains, append_ratios, drain_ratios;
  for (int r = 0; r < runs; ++r) {
    BufferRun run = buffer_run(path, events, batch, ack_inline);
    if (sealed) {
      BufferRun s = buffer_run(path, events, batch, ack_inline, *sealed);
      std::printf(
          "run %d sealed (%s): append %.0f events/s (%.0f %% of clear), drain %.0f "
          "events/s (%.0f %% of clear)\n",
          r + 1, tls::aead_cipher_name(sealed->cipher), s.append_rate,
          100 * s.append_rate / run.append_rate, s.drain_rate, 100 * s.drain_rate / run.drain_rate);
      sealed_appends.push_back(s.append_rate);
      sealed_drains.push_back(s.drain_rate);
      append_ratios.push_back(s.append_rate / run.append_rate);
      drain_ratios.push_back(s.drain_rate / run.drain_rate);
    }
    double ref = reference_inserts(path + ".ref", events);
    std::printf(
        "run %d: append %.0f events/s, drain %.0f events/s (%.0f %% in read_batch), "
        "reference %.0f rows/s, reopen %.3f s (clean close) / %.3f s (after a crash)\n",
        r + 1, run.append_rate, run.drain_rate, 100 * run.read_share, ref, run.reopen_clean,
        run.reopen_crash);
    reopens_clean.push_back(run.reopen_clean);
    reopens_crash.push_back(run.reopen_crash);
    appends.push_back(run.append_rate);
    drains.push_back(run.drain_rate);
    references.push_back(ref);
  }
  for (const char* suffix :
       {"", "-wal", "-shm", ".state", ".reserve", ".ref", ".ref-wal", ".ref-shm"}) {
    std::filesystem::remove(path + suffix);
  }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const double append = median(appends), drain = median(drains), ref = median(references);
  std::printf("events per run: %llu of %zu bytes; medians of %d runs\n",
              static_cast<unsigned long long>(events), kEventBytes, runs);
  std::printf("append: %.0f events/s, %.1f MB/s (synchronous=FULL, group commit)\n", append,
              append * kEventBytes / 1e6);
  std::printf("reference (plain batched SQLite inserts): %.0f rows/s, %.1f MB/s\n", ref,
              ref * kEventBytes / 1e6);
  std::printf("append / reference: %.0f %%\n", 100.0 * append / ref);
  std::printf("drain (read_batch %zu, %s): %.0f events/s\n", batch,
              ack_inline ? "ack after each batch" : "acks on a second thread", drain);
  std::printf("open with the backlog pending: %.3f s after a clean close, %.3f s after a crash\n",
              median(reopens_clean), median(reopens_crash));
  if (sealed) {
    std::printf("sealed (%s): append %.0f events/s, drain %.0f events/s\n",
                tls::aead_cipher_name(sealed->cipher), median(sealed_appends),
                median(sealed_drains));
    std::printf("sealed / clear, run by run: append %.0f %%, drain %.0f %% (aim >= 80 %%)\n",
                100 * median(append_ratios), 100 * median(drain_ratios));
    std::vector<double> seals, opens;
    for (int r = 0; r < runs; ++r) {
      const auto [seal_us, open_us] = cipher_cost(sealed->cipher);
      seals.push_back(seal_us);
      opens.push_back(open_us);
    }
    std::printf("the cipher alone (%s, %zu-byte events): seal %.2f us, open %.2f us per event\n",
                tls::aead_cipher_name(sealed->cipher), kEventBytes, median(seals), median(opens));
  }
  std::printf("peak RSS: %.1f MiB\n", static_cast<double>(ru.ru_maxrss) / 1024.0);
  return 0;
}
