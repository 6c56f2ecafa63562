// The agent's buffer under power cuts and I/O errors, through a sqlite3_vfs that drops or tears
// the writes not yet synced and fails chosen I/O calls (tests/faults/fault_vfs.hpp), with the
// buffer's default settings (synchronous = FULL, group commit). docs/RELIABILITY.md has the
// figures this prints.
//
// Power: for cut points spread over a workload of appends and acks, the power goes at that
// I/O call; the buffer is closed (nothing may crash), the unsynced writes are dropped (or
// torn, sector by sector), and the file is opened again: every event whose append was
// reported durable before the cut, and not acknowledged since, is there, with its bytes; the
// file passes quick_check or took the corruption path (counted); and it takes appends again.
//
// I/O errors: for every N over the same workload, the N-th I/O call fails (SQLITE_IOERR of
// that call's kind, or SQLITE_FULL), once. No crash; no append reported durable is missing
// afterwards; no event is gone that was not acknowledged; and the same buffer object, still
// open, takes appends again once the error has passed.
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>

#include "agent/buffer/sqlite_buffer.hpp"
#include "common/clock.hpp"
#include "tests/faults/fault_vfs.hpp"
#include "tests/support/temp_dir.hpp"

using namespace outpost;
using namespace outpost::agent;
using namespace outpost::test;

namespace {

BufferOptions defaults(const std::string& path) {
  BufferOptions o;  // the defaults, as an agent runs them
  o.path = path;
  o.agent_id = "fault-test";
  return o;
}

// What the buffer told its callers.
struct Told {
  std::map<uint64_t, std::string> durable;  // seq -> body of appends reported durable
  uint64_t acked = 0;                       // the highest ack reported done
  uint64_t refused_appends = 0;
  uint64_t failed_acks = 0;
};

std::string body_of(uint64_t round, size_t i, std::mt19937& rng) {
  std::string b = "event r" + std::to_string(round) + " i" + std::to_string(i) + " ";
  b.append(rng() % 300, static_cast<char>('a' + rng() % 26));
  return b;
}

// Appends batches of 1-20 events and acknowledges older ones now and then, waiting for each
// result, for `rounds` rounds or until an append fails while `stop_on_error`.
void workload(Buffer& buffer, Told& told, uint32_t seed, int rounds, bool stop_on_error) {
  std::mt19937 rng(seed);
  for (int round = 0; round < rounds; ++round) {
    std::vector<NewEvent> events(1 + rng() % 20);
    std::vector<std::string> bodies;
    for (size_t i = 0; i < events.size(); ++i) {
      events[i].kind = i % 3 == 0 ? EventKind::pixel : EventKind::json;
      events[i].event_time_ns = 1'700'000'000'000'000'000 + round;
      events[i].body = body_of(static_cast<uint64_t>(round), i, rng);
      bodies.push_back(events[i].body);
    }
    auto r = buffer.append(std::move(events)).get();
    if (r) {
      for (uint64_t s = r->first_seq; s <= r->last_seq; ++s)
        told.durable[s] = bodies[s - r->first_seq];
    } else {
      ++told.refused_appends;
      if (stop_on_error) return;
    }
    if (round % 4 == 3 && !told.durable.empty()) {
      // Acknowledge about half of what is stored, as a gateway's acks trail the sends.
      const uint64_t upto = told.durable.rbegin()->first / 2;
      if (upto > told.acked) {
        if (buffer.ack(upto)) {
          told.acked = upto;
        } else {
          ++told.failed_acks;
          if (stop_on_error) return;
        }
      }
    }
  }
}

std::string quick_check(const std::string& path) {
  sqlite3* db = nullptr;
  std::string result = "cannot open";
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      result = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return result;
}

// Everything the reopened buffer holds must agree with what it told: returns the number of
// durable events it checked. `acked_ok`: acks reported done must hold too.
size_t check_reopened(const std::string& path, const Told& told, bool acked_ok,
                      uint64_t* corrupt_recoveries, uint64_t* acks_rolled_back,
                      uint64_t* stored_though_refused) {
  SystemClock clock;
  auto reopened = SqliteBuffer::open(defaults(path), clock);
  REQUIRE_MESSAGE(reopened, (reopened ? "" : reopened.error().describe()));
  auto& b = **reopened;
  auto stats = b.stats();
  REQUIRE(stats);
  *corrupt_recoveries = stats->corrupt_recoveries;
  if (stats->acked_seq < told.acked) ++*acks_rolled_back;
  if (acked_ok) CHECK(stats->acked_seq >= told.acked);
  auto rows = b.read_batch(stats->acked_seq, 1'000'000, 1ULL << 40);
  REQUIRE(rows);
  std::map<uint64_t, const StoredEvent*> held;
  for (const StoredEvent& e : *rows) held[e.seq] = &e;
  size_t checked = 0;
  for (const auto& [seq, body] : told.durable) {
    if (seq <= stats->acked_seq) continue;
    auto it = held.find(seq);
    REQUIRE_MESSAGE(it != held.end(), "durable seq " << seq << " is missing");
    CHECK(it->second->body == body);
    ++checked;
  }
  for (const auto& [seq, e] : held) {
    if (told.durable.count(seq) == 0) ++*stored_though_refused;
  }
  // It takes appends again.
  std::vector<NewEvent> one(1);
  one[0].body = "after";
  CHECK(b.append(std::move(one)).get());
  return checked;
}

// The workload's length in I/O calls, run once without faults (they all succeed).
uint64_t workload_calls(FaultVfs& vfs, uint32_t seed, int rounds) {
  TempDir dir;
  SystemClock clock;
  auto b = SqliteBuffer::open(defaults(dir.file("buffer.db")), clock);
  REQUIRE(b);
  const uint64_t before = vfs.calls();
  Told told;
  workload(**b, told, seed, rounds, true);
  REQUIRE(told.refused_appends == 0);
  return vfs.calls() - before;
}

}  // namespace

TEST_CASE("power cuts at I/O calls across a workload: what was reported durable survives") {
  FaultVfs& vfs = FaultVfs::install();
  const int rounds = 24;
  const uint64_t total = workload_calls(vfs, 1, rounds);
  REQUIRE(total > 50);
  const uint64_t step = std::max<uint64_t>(1, total / 60);
  struct Tally {
    int cuts = 0, passed_quick_check = 0, corruption_path = 0;
    uint64_t durable_checked = 0, acks_rolled_back = 0, stored_though_refused = 0;
    uint64_t undone = 0;
  };
  for (PowerLoss mode : {PowerLoss::drop, PowerLoss::tear}) {
    Tally t;
    const uint64_t undone_before = vfs.writes_undone();
    for (uint64_t at = 1; at <= total; at += step) {
      CAPTURE(at);
      TempDir dir;
      const std::string path = dir.file("buffer.db");
      Told told;
      {
        SystemClock clock;
        auto b = SqliteBuffer::open(defaults(path), clock);
        REQUIRE(b);
        vfs.cut_power_at(at);
        workload(**b, told, static_cast<uint32_t>(at), rounds, true);
        if (vfs.powered()) vfs.cut_power();  // this run needed fewer calls: cut at its end
      }  // closed with the power off: nothing crashes, nothing more reaches the disk
      vfs.restore_power(mode, static_cast<uint32_t>(at));
      ++t.cuts;
      uint64_t recoveries = 0;
      t.durable_checked += check_reopened(path, told, false, &recoveries, &t.acks_rolled_back,
                                          &t.stored_though_refused);
      if (recoveries > 0) {
        ++t.corruption_path;
      } else {
        const std::string qc = quick_check(path);
        CHECK_MESSAGE(qc == "ok", "quick_check: " << qc);
        if (qc == "ok") ++t.passed_quick_check;
      }
    }
    t.undone = vfs.writes_undone() - undone_before;
    std::printf(
        "power loss (%s): %d cuts over %llu I/O calls; %llu durable events checked, 0 missing; "
        "quick_check ok %d, corruption path %d; acks rolled back %llu; events stored though "
        "their append failed %llu; unsynced writes undone %llu\n",
        mode == PowerLoss::drop ? "unsynced writes dropped" : "unsynced sectors torn", t.cuts,
        static_cast<unsigned long long>(total), static_cast<unsigned long long>(t.durable_checked),
        t.passed_quick_check, t.corruption_path,
        static_cast<unsigned long long>(t.acks_rolled_back),
        static_cast<unsigned long long>(t.stored_though_refused),
        static_cast<unsigned long long>(t.undone));
    CHECK(t.undone > 0);  // the cuts did lose writes: the test exercised something
    CHECK(t.durable_checked > 0);
  }
}

TEST_CASE(
    "an I/O error at each call of a workload: nothing acknowledged is lost, and it recovers") {
  FaultVfs& vfs = FaultVfs::install();
  const int rounds = 12;
  const uint64_t total = workload_calls(vfs, 7, rounds);
  const uint64_t step = std::max<uint64_t>(1, total / 120);
  uint64_t runs = 0, refused = 0, failed_acks = 0, checked = 0, recoveries_total = 0;
  uint64_t stored_though_refused = 0;
  for (int code : {SQLITE_IOERR, SQLITE_FULL}) {
    for (uint64_t n = 1; n <= total; n += step) {
      CAPTURE(n);
      CAPTURE(code);
      TempDir dir;
      const std::string path = dir.file("buffer.db");
      Told told;
      {
        SystemClock clock;
        auto b = SqliteBuffer::open(defaults(path), clock);
        REQUIRE(b);
        vfs.fail_call(n, code);
        workload(**b, told, 7, rounds, false);
        vfs.fail_call(0, 0);
        // The error has passed: the same buffer takes appends again.
        bool again = false;
        for (int i = 0; i < 3 && !again; ++i) {
          std::vector<NewEvent> one(1);
          one[0].body = "after the error";
          auto r = (*b)->append(std::move(one)).get();
          again = static_cast<bool>(r);
          if (r) told.durable[r->first_seq] = "after the error";
        }
        CHECK_MESSAGE(again, "the buffer still refuses appends after one failed I/O call");
      }
      ++runs;
      refused += told.refused_appends;
      failed_acks += told.failed_acks;
      uint64_t recoveries = 0, rolled_back = 0, extra = 0;
      checked += check_reopened(path, told, true, &recoveries, &rolled_back, &extra);
      recoveries_total += recoveries;
      stored_though_refused += extra;
      CHECK(recoveries == 0);  // an I/O error is not corruption
    }
  }
  std::printf(
      "I/O errors: %llu runs (SQLITE_IOERR and SQLITE_FULL at every %llu-th of %llu calls); "
      "appends refused %llu, acks failed %llu; %llu durable events checked, 0 missing; "
      "events stored though their append was refused %llu; corruption recoveries %llu\n",
      static_cast<unsigned long long>(runs), static_cast<unsigned long long>(step),
      static_cast<unsigned long long>(total), static_cast<unsigned long long>(refused),
      static_cast<unsigned long long>(failed_acks), static_cast<unsigned long long>(checked),
      static_cast<unsigned long long>(stored_though_refused),
      static_cast<unsigned long long>(recoveries_total));
  CHECK(refused + failed_acks > 0);  // the errors reached the buffer's callers
}

TEST_CASE("without a fault: what the workload was told holds after a clean close") {
  FaultVfs::install();
  for (uint32_t seed : {1u, 7u, 11u}) {
    CAPTURE(seed);
    TempDir dir;
    const std::string path = dir.file("buffer.db");
    Told told;
    {
      SystemClock clock;
      auto b = SqliteBuffer::open(defaults(path), clock);
      REQUIRE(b);
      workload(**b, told, seed, 12, true);
      REQUIRE(told.refused_appends == 0);
    }
    uint64_t recoveries = 0, rolled_back = 0, extra = 0;
    CHECK(check_reopened(path, told, true, &recoveries, &rolled_back, &extra) > 0);
    CHECK(rolled_back == 0);
    CHECK(extra == 0);
  }
}
