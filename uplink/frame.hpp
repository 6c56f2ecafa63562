#pragma once
// The uplink's framing (docs/protocol.md): each frame is a 4-byte big-endian length N, then
// N bytes of a serialized outpost.v1.Frame. And the Batch payload: length-delimited
// outpost.v1.Event messages.
//
// FrameDecoder is the gateway's and the agent's parser of bytes from the network: it checks a
// frame's length against the session's limit as soon as the 4 length bytes are there — before
// it allocates or waits for the body — and never asserts on what it reads.
//
// Thread-safety: a FrameDecoder belongs to one connection and one thread at a time.

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "outpost/v1/wire.pb.h"
#include "proto/event_view.hpp"

namespace outpost::wire {

enum class wire_errc {
  frame_too_large = 1,  // a length prefix above the session's max frame bytes
  bad_frame,            // not a Frame, or a Frame with no message in it
  truncated,            // the stream ended inside a frame
  bad_batch,            // a Batch payload that is not what its header says
};
const std::error_category& wire_category();
inline std::error_code make_error_code(wire_errc e) {
  return {static_cast<int>(e), wire_category()};
}

inline constexpr size_t kLengthPrefixBytes = 4;

// Appends one frame (length prefix and message) to `out`.
void append_frame(std::string& out, const v1::Frame& frame);
std::string encode_frame(const v1::Frame& frame);

class FrameDecoder {
 public:
  explicit FrameDecoder(size_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {}

  // Adds bytes read from the stream. Call next() until it has no frame before feeding more,
  // so that at most one frame plus one read is ever buffered.
  void feed(std::string_view bytes) { buffer_.append(bytes); }
  // The next complete frame; nullopt when more bytes are needed; an error when the stream
  // is unusable (the caller closes the connection).
  Result<std::optional<v1::Frame>> next();
  // At the end of the stream: an error if it ended inside a frame.
  Result<void> finish() const;
  size_t buffered_bytes() const { return buffer_.size() - consumed_; }
  void set_max_frame_bytes(size_t n) { max_frame_bytes_ = n; }

 private:
  size_t max_frame_bytes_;
  std::string buffer_;
  size_t consumed_ = 0;
};

// One event of a batch as it came: its bytes and the fields the gateway routes by.
struct EventView {
  std::string_view bytes;  // a serialized outpost.v1.Event, as the agent sent it
  uint64_t seq = 0;
  int32_t kind = 0;  // an outpost.v1.EventKind number
  int64_t collected_at = 0;
  std::string_view schema;
  size_t index = 0;  // its position in the EventList
};

// The events of one batch: the payload they came in, kept whole, and where each event is in
// it. decode_payload checks every event as protobuf's parser would (proto::check_event) but
// builds no message: the sinks render or copy the bytes themselves. Copies and moves keep the
// events valid (positions, not pointers, are stored).
class EventList {
 public:
  class const_iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = EventView;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = EventView;
    const_iterator(const EventList* list, size_t i) : list_(list), i_(i) {}
    EventView operator*() const { return (*list_)[i_]; }
    const_iterator& operator++() {
      ++i_;
      return *this;
    }
    const_iterator operator+(difference_type n) const {
      return {list_, i_ + static_cast<size_t>(n)};
    }
    bool operator==(const const_iterator& o) const { return i_ == o.i_; }
    bool operator!=(const const_iterator& o) const { return i_ != o.i_; }
    size_t index() const { return i_; }

   private:
    const EventList* list_;
    size_t i_;
  };

  // Appends one serialized outpost.v1.Event (for events this process made, such as tests'
  // and benchmarks'; tests/support/event_list.hpp takes a v1::Event). False, and nothing
  // appended, when the bytes are not an event.
  bool push_back(std::string serialized_event);
  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  EventView operator[](size_t i) const;
  EventView front() const { return (*this)[0]; }
  EventView back() const { return (*this)[items_.size() - 1]; }
  const_iterator begin() const { return {this, 0}; }
  const_iterator end() const { return {this, items_.size()}; }
  // Events rewritten from another list's (the gateway's validation stage): open_chunk() gives
  // the storage to append an event's new bytes to, add_rewritten() records the event just
  // appended there at `offset` (`size` bytes; its schema at `schema` within them) with the
  // seq, kind and collected_at of `like`.
  std::string& open_chunk(size_t reserve) {
    chunks_.emplace_back().reserve(reserve);
    return chunks_.back();
  }
  void add_rewritten(size_t offset, size_t size, std::pair<size_t, size_t> schema,
                     const EventView& like) {
    items_.push_back(Item{chunks_.size() - 1, offset, size, schema.first, schema.second, like.seq,
                          like.kind, like.collected_at});
  }
  // Removes events from the list (their bytes stay in its storage).
  void erase(const_iterator first, const_iterator last) {
    items_.erase(items_.begin() + static_cast<ptrdiff_t>(first.index()),
                 items_.begin() + static_cast<ptrdiff_t>(last.index()));
  }

 private:
  friend Result<EventList> decode_payload(std::string payload, uint32_t expected_count,
                                          uint64_t first_seq, uint64_t last_seq);
  // Records an event whose bytes are chunks_[chunk] at offset (`bytes` views them).
  void add(size_t chunk, size_t offset, std::string_view bytes, const proto::EventHead& head);
  struct Item {
    size_t chunk = 0, offset = 0, size = 0;     // the event's bytes: chunks_[chunk] at offset
    size_t schema_offset = 0, schema_size = 0;  // within the event's bytes
    uint64_t seq = 0;
    int32_t kind = 0;
    int64_t collected_at = 0;
  };
  std::vector<std::string> chunks_;  // a decoded payload, or events pushed one by one
  std::vector<Item> items_;
};

// A batch that passed the gateway side's checks, as a sink (or a relay's buffer) takes it.
struct DecodedBatch {
  std::string agent_id;    // the device identity from its certificate
  uint64_t first_seq = 0;  // the seq range the batch covers (docs/protocol.md)...
  uint64_t last_seq = 0;   // ...up to here: the new high-water mark
  // The first seq of the session's first batch: the agent's oldest unacknowledged event when
  // the session began. A sink with no mark yet for the agent takes it as the start of the
  // agent's seqs (a mark of session_first_seq - 1), so that a batch cannot overtake an
  // earlier one of the session that was refused or failed. 0: not known.
  uint64_t session_first_seq = 0;
  // The relay that sent the batch for agent_id (its certificate's identity), or empty when the
  // device sent it itself; stamped into each event's provenance.
  std::string relayed_by;
  // Seq order, as the agent sent them. The sink writes agent_id (the certificate's identity)
  // as each event's agent id, whatever the event's bytes say.
  EventList events;
  // Filled by the gateway's validation stage (gateway/pipeline/validation.hpp): by event
  // index, the dead-letter record of a bad event (a JSON object), empty for a good one; an
  // empty vector when every event is good.
  std::vector<std::string> dead_letters;
  bool bad(size_t index) const { return !dead_letters.empty() && !dead_letters[index].empty(); }
  // The agent's lane (docs/protocol.md, "Lanes"): 0, or 1 for its live lane.
  uint32_t lane = 0;
  // The key of the high-water mark the batch is judged against: the agent's, or for its live
  // lane the agent's followed by kLiveLaneMark (a byte no identity has, so no device's mark).
  std::string mark_key() const { return lane == 0 ? agent_id : agent_id + kLiveLaneMark; }
  static constexpr const char* kLiveLaneMark = "\x1flive";
};

// A Batch payload is the events, each length-delimited (proto::append_delimited builds it).
// Splits a payload into its events; an error unless it holds exactly `expected_count`
// well-formed events with seqs in [first_seq, last_seq], strictly increasing.
Result<EventList> decode_payload(std::string payload, uint32_t expected_count, uint64_t first_seq,
                                 uint64_t last_seq);

}  // namespace outpost::wire

template <>
struct std::is_error_code_enum<outpost::wire::wire_errc> : std::true_type {};
