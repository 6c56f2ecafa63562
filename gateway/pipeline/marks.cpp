#include "gateway/pipeline/marks.hpp"

namespace outpost::gateway {

MarkDecision decide_mark(std::optional<uint64_t> known, const SinkBatch& b) {
  if (!known && b.session_first_seq > 0) known = b.session_first_seq - 1;
  MarkDecision d;
  d.mark = known.value_or(0);
  if (!known || b.first_seq <= d.mark + 1) return d;
  if (b.session_first_seq > 0 && b.first_seq <= b.session_first_seq) {
    d.lost = b.first_seq - 1 - d.mark;
    d.mark = b.first_seq - 1;
    return d;
  }
  d.refuse = "batch starts at seq " + std::to_string(b.first_seq) + " but agent " + b.agent_id +
             " has everything only up to " + std::to_string(d.mark) +
             "; send the missing seqs first";
  return d;
}

}  // namespace outpost::gateway
