#include "uplink/frame.hpp"

#include <algorithm>

#include "common/error_category.hpp"
#include "proto/varint.hpp"

namespace outpost::wire {
namespace {

const char* describe(wire_errc e) {
  switch (e) {
    case wire_errc::frame_too_large:
      return "frame larger than the session allows";
    case wire_errc::bad_frame:
      return "malformed frame";
    case wire_errc::truncated:
      return "stream ended inside a frame";
    case wire_errc::bad_batch:
      return "malformed batch payload";
  }
  return nullptr;
}

uint32_t read_be32(const char* p) {
  auto b = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
}

}  // namespace

const std::error_category& wire_category() {
  static const EnumCategory<wire_errc> category("outpost.wire", describe);
  return category;
}

void append_frame(std::string& out, const v1::Frame& frame) {
  const size_t n = frame.ByteSizeLong();
  const char prefix[kLengthPrefixBytes] = {
      static_cast<char>((n >> 24) & 0xff), static_cast<char>((n >> 16) & 0xff),
      static_cast<char>((n >> 8) & 0xff), static_cast<char>(n & 0xff)};
  out.append(prefix, kLengthPrefixBytes);
  const size_t at = out.size();
  out.resize(at + n);
  frame.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(out.data() + at));
}

std::string encode_frame(const v1::Frame& frame) {
  std::string out;
  append_frame(out, frame);
  return out;
}

Result<std::optional<v1::Frame>> FrameDecoder::next() {
  if (buffered_bytes() < kLengthPrefixBytes) return std::optional<v1::Frame>();
  const uint32_t length = read_be32(buffer_.data() + consumed_);
  if (length > max_frame_bytes_) {
    return make_error(wire_errc::frame_too_large, "frame of " + std::to_string(length) +
                                                      " bytes exceeds the limit of " +
                                                      std::to_string(max_frame_bytes_));
  }
  if (buffered_bytes() < kLengthPrefixBytes + length) return std::optional<v1::Frame>();
  v1::Frame frame;
  const char* body = buffer_.data() + consumed_ + kLengthPrefixBytes;
  if (!frame.ParseFromArray(body, static_cast<int>(length))) {
    return make_error(wire_errc::bad_frame,
                      "frame of " + std::to_string(length) + " bytes is not an outpost.v1.Frame");
  }
  if (frame.body_case() == v1::Frame::BODY_NOT_SET) {
    return make_error(wire_errc::bad_frame, "frame carries no message this version knows");
  }
  consumed_ += kLengthPrefixBytes + length;
  if (consumed_ == buffer_.size()) {
    buffer_.clear();
    consumed_ = 0;
  } else if (consumed_ > buffer_.size() / 2) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  return std::optional<v1::Frame>(std::move(frame));
}

Result<void> FrameDecoder::finish() const {
  if (buffered_bytes() == 0) return {};
  return make_error(wire_errc::truncated,
                    "the stream ended " + std::to_string(buffered_bytes()) + " bytes into a frame");
}

EventView EventList::operator[](size_t i) const {
  const Item& it = items_[i];
  const std::string_view bytes = std::string_view(chunks_[it.chunk]).substr(it.offset, it.size);
  return {bytes, it.seq, it.kind, it.collected_at, bytes.substr(it.schema_offset, it.schema_size),
          i};
}

void EventList::add(size_t chunk, size_t offset, std::string_view bytes,
                    const proto::EventHead& head) {
  Item item;
  item.chunk = chunk;
  item.offset = offset;
  item.size = bytes.size();
  item.seq = head.seq;
  item.kind = head.kind;
  item.collected_at = head.collected_at;
  if (!head.schema.empty()) {
    item.schema_offset = static_cast<size_t>(head.schema.data() - bytes.data());
    item.schema_size = head.schema.size();
  }
  items_.push_back(item);
}

bool EventList::push_back(std::string serialized_event) {
  chunks_.push_back(std::move(serialized_event));
  const std::string& bytes = chunks_.back();
  auto head = proto::check_event(bytes);
  if (!head) {
    chunks_.pop_back();
    return false;
  }
  add(chunks_.size() - 1, 0, bytes, *head);
  return true;
}

Result<EventList> decode_payload(std::string payload, uint32_t expected_count, uint64_t first_seq,
                                 uint64_t last_seq) {
  auto bad = [](const std::string& why) { return make_error(wire_errc::bad_batch, why); };
  if (first_seq == 0 || last_seq < first_seq) {
    return bad("batch seq range [" + std::to_string(first_seq) + ", " + std::to_string(last_seq) +
               "] is empty or starts at 0");
  }
  if (expected_count == 0 || expected_count - 1 > last_seq - first_seq) {
    return bad("batch declares " + std::to_string(expected_count) + " events for the seq range [" +
               std::to_string(first_seq) + ", " + std::to_string(last_seq) + "]");
  }
  EventList events;
  // Each event takes at least its one-byte length prefix: the header's count, which the
  // sender chose, cannot make this reserve more than the payload could hold.
  events.items_.reserve(std::min<size_t>(expected_count, payload.size()));
  const std::string_view all = payload;
  const auto* begin = reinterpret_cast<const uint8_t*>(all.data());
  uint64_t previous = 0;
  for (size_t at = 0; at < all.size();) {
    if (events.size() == expected_count) {
      return bad("batch payload holds more than the " + std::to_string(expected_count) +
                 " events its header declares");
    }
    uint64_t size = 0;
    const uint8_t* p = begin + at;
    const bool ended = proto::read_varint(p, begin + all.size(), size);
    at = static_cast<size_t>(p - begin);
    if (!ended || size > all.size() - at) {
      return bad("event " + std::to_string(events.size()) + " has a bad length prefix");
    }
    const std::string_view bytes = all.substr(at, static_cast<size_t>(size));
    auto head = proto::check_event(bytes);
    if (!head) {
      return bad("event " + std::to_string(events.size()) +
                 " is not an outpost.v1.Event: " + head.error().message);
    }
    if (head->seq < first_seq || head->seq > last_seq || head->seq <= previous) {
      return bad("event seq " + std::to_string(head->seq) + " is outside [" +
                 std::to_string(first_seq) + ", " + std::to_string(last_seq) +
                 "] or not increasing");
    }
    previous = head->seq;
    events.add(0, at, bytes, *head);  // chunk 0: the payload, moved in below
    at += bytes.size();
  }
  if (events.size() != expected_count) {
    return bad("batch payload holds " + std::to_string(events.size()) + " events, its header " +
               std::to_string(expected_count));
  }
  events.chunks_.push_back(std::move(payload));
  return events;
}

}  // namespace outpost::wire
