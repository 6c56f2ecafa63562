// The mark rule both sinks apply (gateway/pipeline/marks.hpp), without a sink or a broker.
#include "uplink/marks.hpp"

#include <doctest/doctest.h>

#include <vector>

#include "outpost/v1/event.pb.h"
#include "tests/support/event_list.hpp"

using namespace outpost;
using namespace outpost::uplink;

namespace {

SinkBatch batch(uint64_t first, uint64_t last, uint64_t session_first = 0) {
  SinkBatch b;
  b.agent_id = "device-1";
  b.first_seq = first;
  b.last_seq = last;
  b.session_first_seq = session_first;
  for (uint64_t s = first; s <= last; ++s) {
    v1::Event e;
    e.set_seq(s);
    e.set_kind(v1::EVENT_KIND_JSON);
    e.set_json("{}");
    test::push_event(b.events, e);
  }
  return b;
}

std::vector<uint64_t> written(const SinkBatch& b, const MarkDecision& d, SinkResult* out,
                              size_t stop_after = SIZE_MAX) {
  std::vector<uint64_t> seqs;
  *out = write_above_mark(b, d, [&](const wire::EventView& e) {
    if (seqs.size() == stop_after) return false;
    seqs.push_back(e.seq);
    return true;
  });
  return seqs;
}

}  // namespace

TEST_CASE("an agent without a mark: everything, or from its session's start") {
  auto fresh = decide_mark(std::nullopt, batch(1, 5));
  CHECK(fresh.mark == 0);
  CHECK_FALSE(fresh.refuse);
  CHECK(fresh.lost == 0);
  // No mark, but the session began at 10: seqs below it were acked elsewhere.
  auto resumed = decide_mark(std::nullopt, batch(10, 12, 10));
  CHECK(resumed.mark == 9);
  CHECK_FALSE(resumed.refuse);
  // A later batch of that session cannot overtake one that was not written.
  auto overtaking = decide_mark(std::nullopt, batch(13, 15, 10));
  REQUIRE(overtaking.refuse);
  CHECK(overtaking.refuse->find("starts at seq 13") != std::string::npos);
  CHECK(overtaking.refuse->find("up to 9") != std::string::npos);
}

TEST_CASE("events at or below the mark are duplicates; the rest are written in order") {
  const SinkBatch b = batch(4, 9);
  auto d = decide_mark(6, b);
  CHECK(d.mark == 6);
  CHECK_FALSE(d.refuse);
  SinkResult r;
  CHECK(written(b, d, &r) == std::vector<uint64_t>{7, 8, 9});
  CHECK(r.duplicates == 3);
  CHECK(r.written == 3);
  CHECK(r.gap_lost == 0);
  // A write that fails stops the batch; what was not written is not counted.
  CHECK(written(b, d, &r, 1) == std::vector<uint64_t>{7});
  CHECK(r.written == 1);
  // All of it again: nothing written.
  auto again = decide_mark(9, b);
  CHECK(written(b, again, &r).empty());
  CHECK(r.duplicates == 6);
}

TEST_CASE("a gap is refused while it can be filled, and counted as lost when it cannot") {
  // The agent still has seqs 6..10 (its session began at 6): refuse, it sends them.
  auto fillable = decide_mark(5, batch(11, 20, 6));
  REQUIRE(fillable.refuse);
  CHECK(fillable.lost == 0);
  // The session itself starts at 11: everything below was acknowledged to the agent and
  // deleted, so 6..10 can never come; counted, and the batch is taken.
  const SinkBatch b = batch(11, 20, 11);
  auto lost = decide_mark(5, b);
  CHECK_FALSE(lost.refuse);
  CHECK(lost.lost == 5);
  CHECK(lost.mark == 10);
  SinkResult r;
  CHECK(written(b, lost, &r).size() == 10);
  CHECK(r.gap_lost == 5);
  CHECK(r.gap_first == 6);
  // Without a known session start, a gap is always refused.
  CHECK(decide_mark(5, batch(11, 20)).refuse);
}

TEST_CASE("MarkBook: a group continues its own marks and moves the book's only on commit") {
  MarkBook book;
  book.set_mark("device-1", 100);
  {
    MarkBook::Group g(book);
    SinkBatch a = batch(101, 150), b = batch(151, 200);
    auto da = g.admit(a);
    REQUIRE_FALSE(da.refuse);
    g.written(a, da);
    auto db = g.admit(b);  // continues the group's 150, not the book's 100
    REQUIRE_FALSE(db.refuse);
    CHECK(db.mark == 150);
    g.written(b, db);
    CHECK(g.moved().at("device-1") == 200);
    CHECK(book.mark("device-1") == 100u);  // not durable yet: the group is dropped
  }
  CHECK(book.mark("device-1") == 100u);
  MarkBook::Group g(book);
  SinkBatch a = batch(101, 200);
  g.written(a, g.admit(a));
  g.commit();
  CHECK(book.mark("device-1") == 200u);
  book.set_mark("device-1", 150);  // read back from an older state: a mark never goes back
  CHECK(book.mark("device-1") == 200u);
  book.reset_marks({{"device-2", 7}});
  CHECK_FALSE(book.mark("device-1"));
  CHECK(book.mark("device-2") == 7u);
}

TEST_CASE(
    "MarkBook: a failed batch holds its agent's later batches back until it is written; "
    "a new session releases them") {
  MarkBook book;
  book.set_mark("device-1", 100);
  SinkBatch first = batch(101, 200, 101), second = batch(201, 300, 101);
  book.failed({&first});  // the disk failed under the group of the first batch
  CHECK(book.failed_from("device-1") == 101u);
  {
    MarkBook::Group g(book);  // the second overtakes it: refused, whatever its mark says
    auto d = g.admit(second);
    REQUIRE(d.refuse);
    CHECK(d.refuse->find("from seq 101") != std::string::npos);
    g.commit();
  }
  CHECK(book.mark("device-1") == 100u);
  {
    MarkBook::Group g(book);  // the resend: the first, then the second, in one group
    auto d1 = g.admit(first);
    REQUIRE_FALSE(d1.refuse);
    g.written(first, d1);
    auto d2 = g.admit(second);
    REQUIRE_FALSE(d2.refuse);
    g.written(second, d2);
    g.commit();
  }
  CHECK(book.mark("device-1") == 300u);
  CHECK_FALSE(book.failed_from("device-1"));

  SUBCASE("a gap refused in a committed group holds back what comes after it") {
    SinkBatch gap = batch(350, 400, 301), later = batch(401, 450, 301);
    MarkBook::Group g(book);
    CHECK(g.admit(gap).refuse);
    g.commit();
    CHECK(book.failed_from("device-1") == 350u);
    MarkBook::Group g2(book);
    CHECK(g2.admit(later).refuse);
    book.session_started("device-1");
    CHECK_FALSE(book.failed_from("device-1"));
    MarkBook::Group g3(book);
    auto d = g3.admit(batch(301, 450, 301));
    CHECK_FALSE(d.refuse);
  }
  SUBCASE("a failure of what a newer session has written since holds nothing back") {
    // An old session's group failed late (its Kafka transaction stalled), after the agent's
    // next session had resent and written the same seqs and more.
    book.failed({&first});  // 101..200, below the mark of 300
    CHECK_FALSE(book.failed_from("device-1"));
    MarkBook::Group g(book);
    CHECK_FALSE(g.admit(batch(301, 400, 301)).refuse);
  }
  SUBCASE("a refusal before the group (a full queue) counts too") {
    book.failed("device-1", 301);
    MarkBook::Group g(book);
    CHECK(g.admit(batch(401, 450, 301)).refuse);
    CHECK_FALSE(g.admit(batch(301, 400, 301)).refuse);
  }
}

TEST_CASE("two lanes: each judged against its own mark; a live lane's jump is not a loss") {
  MarkBook book;
  book.set_mark("device-1", 100);  // the bulk lane (and agents without lanes) wrote up to 100
  // A live batch claiming 101..500 of a session that started at 101: its own mark is unknown,
  // so it starts at the session's start; the bulk mark does not make it a duplicate.
  SinkBatch live = batch(101, 500, 101);
  live.lane = 1;
  CHECK(live.mark_key() != "device-1");
  MarkBook::Group g(book);
  MarkDecision d = g.admit(live);
  CHECK_FALSE(d.refuse);
  CHECK(d.mark == 100);
  g.written(live, d);
  g.commit();
  CHECK(book.mark("device-1") == 100);  // the bulk mark did not move
  CHECK(book.mark(live.mark_key()) == 500);
  // The bulk lane goes on from 101 (not a gap, not duplicates of the live lane's seqs).
  MarkBook::Group g2(book);
  MarkDecision bulk = g2.admit(batch(101, 300, 101));
  CHECK_FALSE(bulk.refuse);
  CHECK(bulk.mark == 100);
  CHECK(bulk.lost == 0);
  // A later session whose live lane starts above its live mark (the seqs between went in
  // the bulk lane and were deleted): taken, nothing counted as lost.
  SinkBatch later = batch(900, 950, 900);
  later.lane = 1;
  MarkDecision jump = decide_mark(500, later);
  CHECK_FALSE(jump.refuse);
  CHECK(jump.lost == 0);
  CHECK(jump.mark == 899);
  // The same jump in lane 0 is a loss, as before.
  MarkDecision lost = decide_mark(500, batch(900, 950, 900));
  CHECK(lost.lost == 399);
  // A failed live batch holds back only its lane.
  book.failed(live.mark_key(), 501);
  SinkBatch live_next = batch(600, 700);
  live_next.lane = 1;
  CHECK(book.holds_back(live_next));
  CHECK_FALSE(book.holds_back(batch(301, 400)));
  book.session_started("device-1");  // a new session frees both lanes
  CHECK_FALSE(book.holds_back(live_next));
}
