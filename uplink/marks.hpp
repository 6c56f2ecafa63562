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
// And one rule on top, in MarkBook: a batch that failed (refused for a gap, or not written for
// any reason) keeps the agent's later batches out until it is written, so that none of them
// overtakes it (docs/gateway.md, "Batches that overtake a failed one").
//
// Thread-safety: decide_mark and write_above_mark are pure; a MarkBook may be used from any
// thread (one mutex); a MarkBook::Group belongs to the sink's writing thread.

#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "uplink/sink.hpp"

namespace outpost::uplink {

struct MarkDecision {
  uint64_t mark = 0;                  // events with seq <= mark are duplicates
  std::optional<std::string> refuse;  // why the batch must be sent again later (a fillable gap)
  uint64_t lost = 0;                  // seqs in (the sink's mark, first_seq) that cannot come back
};

MarkDecision decide_mark(std::optional<uint64_t> known_mark, const SinkBatch& batch);

// Applies a decision that does not refuse: each event above the mark goes to `write`
// (bool(const wire::EventView&); false stops, the event not written; a bad one, batch.bad(),
// goes to the dead-letter place and counts as dead_lettered), the others are counted as
// duplicates, the lost seqs are reported.
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
    ++(batch.bad(e.index) ? r.dead_lettered : r.written);
  }
  return r;
}

// The marks a sink knows and the failures that hold an agent's later batches back. The sink
// owns the marks' durability: it loads them (set_mark), decides a group of batches against
// them (Group), and commits the group's marks once they are durable with the data.
class MarkBook {
 public:
  class Group;

  std::optional<uint64_t> mark(const std::string& agent) const;
  // A mark as read from the sink's durable state (at start, or read back from Kafka); a mark
  // never moves back.
  void set_mark(const std::string& agent, uint64_t mark);
  std::unordered_map<std::string, uint64_t> marks() const;
  // Every mark as read back whole from the sink's durable state (a reconnect to Kafka).
  void reset_marks(std::unordered_map<std::string, uint64_t> marks);
  // A batch of `agent` from `first_seq` was not written: later batches of the agent are
  // refused until one starting at or below it is written.
  void failed(const std::string& agent, uint64_t first_seq);
  // Nothing of a group was written: every batch of it counts as failed.
  void failed(const std::vector<const SinkBatch*>& batches);
  // Why the batch must wait for a failed one of its agent, or nullopt.
  std::optional<std::string> holds_back(const SinkBatch& batch) const;
  // The lowest failed seq of the agent, if one holds its batches back.
  std::optional<uint64_t> failed_from(const std::string& agent) const;
  // A new session of the agent sends again from its last acknowledged seq: its failures no
  // longer hold anything back.
  void session_started(const std::string& agent);

 private:
  void note_failed_locked(const std::string& agent, uint64_t first_seq);
  mutable std::mutex mu_;
  std::unordered_map<std::string, uint64_t> marks_;
  std::unordered_map<std::string, uint64_t> failed_from_;
};

// One group of batches decided in order against the book, as the group leaves the marks: its
// second batch of an agent continues from its first.
class MarkBook::Group {
 public:
  explicit Group(MarkBook& book);
  // The decision for the group's next batch: refused (a gap, or above a failed batch of the
  // agent), or what is a duplicate and what is lost. Call written() after writing it.
  MarkDecision admit(const SinkBatch& batch);
  void written(const SinkBatch& batch, const MarkDecision& decision);
  // The agent's mark as the group leaves it so far.
  std::optional<uint64_t> mark(const std::string& agent) const;
  // The marks this group moves (agent -> new mark).
  const std::unordered_map<std::string, uint64_t>& moved() const { return moved_; }
  // The group's data and marks are durable: the book takes its marks, its refused batches
  // count as failed, a failed batch written again releases its agent.
  void commit();

 private:
  MarkBook& book_;
  std::unordered_map<std::string, uint64_t> floors_;  // the book's failures when the group began
  std::unordered_map<std::string, uint64_t> moved_;
  std::vector<std::pair<std::string, uint64_t>> refused_;
  std::set<std::string> released_;
};

}  // namespace outpost::uplink
