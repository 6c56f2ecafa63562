// The buffer against an in-memory model: random sequences of append / read / ack / reopen,
// compared step by step. Seeded and reproducible: OUTPOST_TEST_SEED=<n> replays a run.
#include <doctest/doctest.h>

#include <cstdlib>
#include <map>
#include <random>

#include "agent/buffer/buffer_inspector.hpp"
#include "tests/unit/agent/buffer/buffer_test_support.hpp"

using namespace outpost;
using namespace outpost::agent;

namespace {

struct ModelEvent {
  EventKind kind;
  int32_t priority;
  int64_t event_time;
  std::string body;
};

uint64_t seed_from_env() {
  const char* s = std::getenv("OUTPOST_TEST_SEED");
  return s ? std::strtoull(s, nullptr, 10) : 20261121;
}

}  // namespace

TEST_CASE("buffer matches an in-memory model over 10k random steps, across reopens") {
  const uint64_t seed = seed_from_env();
  MESSAGE("seed " << seed << " (set OUTPOST_TEST_SEED to replay)");
  std::mt19937_64 rng(seed);
  auto pick = [&](uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
  };

  test::TempDir dir;
  ManualClock clock;
  auto options = test::fast_options(dir.file("buffer.db"));
  options.segment_shift = 8;  // 256 seqs per table: a run creates and drops about a hundred
  auto opened = SqliteBuffer::open(options, clock);
  REQUIRE(opened);
  std::unique_ptr<SqliteBuffer> buffer = std::move(*opened);

  std::map<uint64_t, ModelEvent> model;
  uint64_t next_seq = 1;
  uint64_t acked = 0;
  uint64_t read_cursor = 0;  // the forwarder's position: it reads ahead of what it acks
  int appends = 0, reads = 0, acks = 0, reopens = 0;

  for (int step = 0; step < 10'000; ++step) {
    CAPTURE(step);
    uint64_t op = pick(0, 99);
    if (op < 50) {  // append 1..20 events
      std::vector<NewEvent> events;
      std::vector<ModelEvent> expected;
      for (uint64_t i = pick(1, 20); i > 0; --i) {
        auto kind = kAllKinds[pick(0, 2)];
        auto e = test::event_of(kind, static_cast<size_t>(pick(0, 300)),
                                static_cast<int32_t>(pick(0, 3)),
                                static_cast<int64_t>(pick(1, 1'000'000)));
        e.body += std::to_string(step);  // distinct content per step
        expected.push_back({e.kind, e.priority, e.event_time_ns, e.body});
        events.push_back(std::move(e));
      }
      auto r = buffer->append(std::move(events)).get();
      REQUIRE(r);
      CHECK(r->first_seq == next_seq);
      CHECK(r->last_seq == next_seq + expected.size() - 1);
      for (auto& e : expected) model[next_seq++] = std::move(e);
      ++appends;
    } else if (op < 80) {  // read a batch after the cursor (or from the start)
      if (pick(0, 4) == 0) read_cursor = acked;
      auto max_events = static_cast<size_t>(pick(1, 50));
      auto max_bytes = static_cast<size_t>(pick(1, 5000));
      auto batch = buffer->read_batch(read_cursor, max_events, max_bytes);
      REQUIRE(batch);
      auto it = model.upper_bound(read_cursor);
      size_t bytes = 0;
      size_t n = 0;
      for (; it != model.end() && n < max_events; ++it, ++n) {
        if (n > 0 && bytes + it->second.body.size() > max_bytes) break;
        bytes += it->second.body.size();
        REQUIRE(n < batch->size());
        const StoredEvent& got = (*batch)[n];
        CHECK(got.seq == it->first);
        CHECK(got.kind == it->second.kind);
        CHECK(got.priority == it->second.priority);
        CHECK(got.event_time_ns == it->second.event_time);
        CHECK(got.body == it->second.body);
      }
      CHECK(batch->size() == n);
      if (!batch->empty()) read_cursor = batch->back().seq;
      ++reads;
    } else if (op < 95) {  // ack up to somewhere at or below what was read
      uint64_t up_to = acked + pick(0, read_cursor > acked ? read_cursor - acked : 0);
      REQUIRE(buffer->ack(up_to));
      model.erase(model.begin(), model.upper_bound(up_to));
      acked = std::max(acked, up_to);
      ++acks;
    } else {  // reopen: everything acknowledged stays gone, everything else stays
      buffer.reset();
      auto again = SqliteBuffer::open(options, clock);
      REQUIRE(again);
      buffer = std::move(*again);
      read_cursor = acked;
      ++reopens;
    }
    if (step % 250 == 0 || op >= 95) {
      auto s = buffer->stats();
      REQUIRE(s);
      uint64_t bytes = 0;
      for (auto& [seq, e] : model) bytes += e.body.size();
      CHECK(s->pending_events == model.size());
      CHECK(s->pending_bytes == bytes);
      CHECK(s->next_seq == next_seq);
      CHECK(s->acked_seq == acked);
    }
    if (step % 500 == 0) {  // the read-only tools count from the file itself
      auto inspector = BufferInspector::open(options.path);
      REQUIRE(inspector);
      auto s = inspector->stats();
      REQUIRE(s);
      CHECK(s->pending_events == model.size());
      CHECK(s->acked_seq == acked);
    }
  }
  MESSAGE(appends << " appends, " << reads << " reads, " << acks << " acks, " << reopens
                  << " reopens");
  CHECK(reopens > 100);
}
