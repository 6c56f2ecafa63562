#pragma once
// The one rule both sinks apply to a batch against the agent's high-water mark (docs/protocol.md,
// "Marks, gaps and seqs that cannot come back"). Pure: the sink passes the mark as it knows it
// and gets what to do; it stays the owner of the mark's durability.
//
//   - An agent the sink has no mark for starts where its session started
//     (SinkBatch::session_first_seq - 1), so that a batch cannot overtake an earlier one of the
//     session that was refused or failed.
//   - Events at or below the mark are duplicates.
//   - A batch starting above mark + 1 is refused while the agent may still send the missing
//     seqs: an earlier batch of its window was not written.
//   - But a batch that starts at the agent's session start (first_seq <= session_first_seq)
//     comes from an agent that has nothing below it any more: every lower seq was acknowledged
//     to it, by this gateway or another, and deleted. Such a gap can never be filled (the
//     sink's marks were lost or rolled back); refusing would stall the device for ever. The
//     seqs are counted as lost (`lost`), audited by the server, and the batch is taken.
//
// Thread-safety: a pure function.

#include <cstdint>
#include <optional>
#include <string>

#include "gateway/sinks/sink.hpp"

namespace outpost::gateway {

struct MarkDecision {
  uint64_t mark = 0;                  // events with seq <= mark are duplicates
  std::optional<std::string> refuse;  // why the batch must be sent again later (a fillable gap)
  uint64_t lost = 0;                  // seqs in (the sink's mark, first_seq) that cannot come back
};

MarkDecision decide_mark(std::optional<uint64_t> known_mark, const SinkBatch& batch);

// Applies a decision that does not refuse: each event above the mark goes to `write`
// (bool(const wire::EventView&); false stops, the event not written), the others are counted
// as duplicates, the lost seqs are reported.
template <typename Write>
SinkResult write_above_mark(const SinkBatch& batch, const MarkDecision& decision, Write&& write) {
  SinkResult r;
  r.gap_lost = decision.lost;
  r.gap_first = decision.mark - decision.lost + 1;
  for (const wire::EventView e : batch.events) {
    if (e.seq <= decision.mark) {
      ++r.duplicates;
      continue;
    }
    if (!write(e)) break;
    ++r.written;
  }
  return r;
}

}  // namespace outpost::gateway
