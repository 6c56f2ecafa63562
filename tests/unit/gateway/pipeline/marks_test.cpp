// The mark rule both sinks apply (gateway/pipeline/marks.hpp), without a sink or a broker.
#include "gateway/pipeline/marks.hpp"

#include <doctest/doctest.h>

#include <vector>

#include "outpost/v1/event.pb.h"
#include "tests/support/event_list.hpp"

using namespace outpost;
using namespace outpost::gateway;

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
