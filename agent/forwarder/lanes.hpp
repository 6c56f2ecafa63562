#pragma once
// The forwarder's two lanes (docs/protocol.md, "Lanes"): with a live lane configured, events of
// the chosen kinds or of a priority at or above the chosen one go in the live lane, the others
// in the bulk lane. Each lane sends its own events oldest first, and its batches claim
// contiguous seq ranges of their own (first_seq is the lane's previous batch's last_seq + 1), so
// the gateway judges each lane against a mark of its own. Membership depends on the stored
// event alone, so a batch sent again after a reconnect or a restart is in the same lane.
//
// LaneBook keeps a session's account of the lanes: how far each has looked, what each has in
// flight, the bytes each sent while both had events (the live lane takes its share first), and
// the seq up to which the buffer may delete: every event at or below it is acknowledged in
// its lane (min over the lanes of what each covers).
//
// Thread-safety: plain values; the forwarder's thread.

#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <optional>

#include "common/event.hpp"

namespace outpost::agent {

struct LiveLaneOptions {
  std::array<bool, kKindCount> kinds{};  // these kinds go in the live lane...
  int32_t min_priority = 0;              // ...and events of this priority or more (0: none)
  uint32_t share_percent = 20;           // of the bytes sent while both lanes have events
  bool enabled() const {
    bool any = min_priority > 0;
    for (bool k : kinds) any = any || k;
    return any;
  }
  bool takes(EventKind kind, int32_t priority) const {
    return kinds[kind_index(kind)] || (min_priority > 0 && priority >= min_priority);
  }
  bool operator==(const LiveLaneOptions&) const = default;
};

enum Lane : int { kBulkLane = 0, kLiveLane = 1 };

class LaneBook {
 public:
  LaneBook(uint32_t share_percent, uint64_t acked_seq) : share_(share_percent), acked_(acked_seq) {
    for (State& s : lanes_) {
      s.scanned = acked_seq;
      s.acked_claim = acked_seq;
    }
  }

  // Which lane to look at first for the next batch: the live lane while its share allows.
  Lane first_choice() const {
    const uint64_t live = lanes_[kLiveLane].bytes, bulk = lanes_[kBulkLane].bytes;
    return live * 100 <= uint64_t{share_} * (live + bulk) ? kLiveLane : kBulkLane;
  }
  uint64_t scanned(Lane l) const { return lanes_[l].scanned; }
  // The first seq the lane's next batch claims.
  uint64_t next_first(Lane l) const {
    return lanes_[l].in_flight.empty() ? lanes_[l].acked_claim + 1
                                       : lanes_[l].in_flight.back().last + 1;
  }
  // The lane looked up to `scanned` and found nothing more: the share starts over.
  void found_nothing(Lane l, uint64_t scanned) {
    lanes_[l].scanned = std::max(lanes_[l].scanned, scanned);
    lanes_[l].idle = true;
    lanes_[kLiveLane].bytes = lanes_[kBulkLane].bytes = 0;
  }
  // A batch of the lane went out: it claims (next_first, last_seq]; the lane looked up to
  // `scanned`; its first event was collected at `first_collected_ns`.
  void sent(Lane l, uint64_t last_seq, uint64_t scanned, uint64_t wire_bytes,
            int64_t first_collected_ns) {
    State& s = lanes_[l];
    s.in_flight.push_back({next_first(l), last_seq, first_collected_ns});
    s.scanned = std::max(s.scanned, scanned);
    s.bytes += wire_bytes;
    s.idle = false;
    s.last_collected_ns = first_collected_ns;
  }
  // An acknowledgement of the batch ending at `last_seq` (acks come in the order sent, so the
  // lane's oldest). Returns the lane, or nullopt when no batch ends there.
  std::optional<Lane> acked(uint64_t last_seq) {
    for (int l = 0; l < 2; ++l) {
      State& s = lanes_[l];
      if (!s.in_flight.empty() && s.in_flight.front().last == last_seq) {
        s.acked_claim = last_seq;
        s.in_flight.pop_front();
        return static_cast<Lane>(l);
      }
    }
    return std::nullopt;
  }
  // Up to where the buffer may delete now, when that moved on since the last call.
  std::optional<uint64_t> deletable() {
    const uint64_t up_to = std::min(covered(kBulkLane), covered(kLiveLane));
    if (up_to <= acked_) return std::nullopt;
    acked_ = up_to;
    return up_to;
  }
  // A retry-later: every batch in flight is abandoned and sent again from the lanes' acks.
  void abandon() {
    for (State& s : lanes_) {
      s.in_flight.clear();
      s.scanned = std::max(s.acked_claim, acked_);
      s.bytes = 0;
    }
  }
  // When the oldest event the lane has in flight, or sent last, was collected; 0 when the
  // lane is idle (it found nothing to send).
  int64_t oldest_collected_ns(Lane l) const {
    const State& s = lanes_[l];
    if (!s.in_flight.empty()) return s.in_flight.front().first_collected_ns;
    return s.idle ? 0 : s.last_collected_ns;
  }

 private:
  struct Claim {
    uint64_t first, last;
    int64_t first_collected_ns;
  };
  struct State {
    uint64_t scanned = 0;      // the last seq looked at
    uint64_t acked_claim = 0;  // the end of the lane's last acknowledged batch
    std::deque<Claim> in_flight;
    uint64_t bytes = 0;  // sent since the lanes last both had events
    bool idle = true;
    int64_t last_collected_ns = 0;
  };
  // Every event of the lane at or below this is acknowledged (or was never the lane's).
  uint64_t covered(Lane l) const {
    const State& s = lanes_[l];
    return s.in_flight.empty() ? s.scanned : s.in_flight.front().first - 1;
  }

  uint32_t share_;
  uint64_t acked_;  // what the buffer was told last
  std::array<State, 2> lanes_{};
};

}  // namespace outpost::agent
