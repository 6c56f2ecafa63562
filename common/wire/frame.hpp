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

#include <boost/iterator/indirect_iterator.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "common/result.hpp"
#include "outpost/v1/event.pb.h"
#include "outpost/v1/wire.pb.h"

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

// The events of one batch, all on one protobuf arena: parsing thousands of events then takes
// a few large allocations instead of several per event, and freeing them (on the sink's
// thread, not the one that parsed them) a few frees. Iterates as v1::Event&. A copy copies
// every event onto an arena of its own (tests send a batch twice; the gateway only moves);
// the arena is made at the first emplace_back.
class EventList {
 public:
  using iterator = boost::indirect_iterator<std::vector<v1::Event*>::iterator>;
  using const_iterator =
      boost::indirect_iterator<std::vector<v1::Event*>::const_iterator, const v1::Event>;

  EventList() = default;
  EventList(EventList&&) noexcept = default;
  EventList& operator=(EventList&&) noexcept = default;
  EventList(const EventList& other) { *this = other; }
  EventList& operator=(const EventList& other) {
    if (this == &other) return *this;
    events_.clear();
    arena_.reset();
    reserve(other.size());
    for (const v1::Event& e : other) push_back(e);
    return *this;
  }

  // A new, empty event at the end, owned by the list.
  v1::Event& emplace_back();
  void push_back(const v1::Event& e) { emplace_back().CopyFrom(e); }
  void reserve(size_t n) { events_.reserve(n); }
  size_t size() const { return events_.size(); }
  bool empty() const { return events_.empty(); }
  v1::Event& operator[](size_t i) { return *events_[i]; }
  const v1::Event& operator[](size_t i) const { return *events_[i]; }
  v1::Event& front() { return *events_.front(); }
  v1::Event& back() { return *events_.back(); }
  iterator begin() { return events_.begin(); }
  iterator end() { return events_.end(); }
  const_iterator begin() const { return events_.cbegin(); }
  const_iterator end() const { return events_.cend(); }
  // Removes events from the list (their memory goes with the arena).
  iterator erase(iterator first, iterator last) { return events_.erase(first.base(), last.base()); }

 private:
  std::unique_ptr<google::protobuf::Arena> arena_;
  std::vector<v1::Event*> events_;
};

// A Batch payload is the events, each length-delimited (proto::append_delimited builds it).
// Splits a payload into its events; an error unless it holds exactly `expected_count`
// well-formed events with seqs in [first_seq, last_seq], strictly increasing.
Result<EventList> decode_payload(std::string_view payload, uint32_t expected_count,
                                 uint64_t first_seq, uint64_t last_seq);

}  // namespace outpost::wire

template <>
struct std::is_error_code_enum<outpost::wire::wire_errc> : std::true_type {};
