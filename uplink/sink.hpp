#pragma once
// Where the gateway writes events: one interface, a file sink (the embedded default) and a
// Kafka sink (issue 4). A sink also owns deduplication, because the high-water mark it keeps
// per agent must be durable together with the data it describes: a sink writes only events
// with seq above the agent's high-water mark and reports the rest as duplicates. And it
// refuses a batch that would leave a gap (first_seq above the mark + 1): an earlier batch of
// that agent was not written, and writing this one would make the earlier one's events look
// like duplicates when they are sent again.
//
// Thread-safety: write() may be called from any thread; callbacks run on the sink's own
// thread and must not block. The sink outlives every session that writes to it.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "uplink/frame.hpp"

namespace outpost::uplink {

// Why a sink did not take a batch (or cannot start). Each batch it fails is answered
// retry-later; the code names the cause in logs, /readyz and
// outpost_gateway_sink_errors_total{code}.
enum class sink_errc {
  unavailable = 1,  // cannot take writes now: the broker unreachable, shutting down, rebuilding
  gap,              // an earlier batch of the agent was not written: it must come first
  io,               // reading or writing the sink's files failed
  disk_full,        // the sink's disk (or quota) is full
  queue_full,       // more batches wait than the sink queues
  config,           // the sink cannot work as configured (a missing topic, ...)
};
const std::error_category& sink_category();
inline std::error_code make_error_code(sink_errc e) {
  return {static_cast<int>(e), sink_category()};
}
// The code's name as metrics and logs show it ("disk_full"), "other" for an error of
// another category.
const char* sink_error_name(const std::error_code& code);
// "disk_full: file sink: write ...: No space left on device": the code, then the message.
std::string describe_sink_error(const Error& error);
// An io error from errno: disk_full for ENOSPC and EDQUOT.
sink_errc sink_errc_from_errno(int err);

// What the gateway's protocol decoded and checked (frame.hpp).
using SinkBatch = wire::DecodedBatch;

struct SinkResult {
  uint64_t written = 0;        // good events, where their kind goes
  uint64_t dead_lettered = 0;  // bad events (SinkBatch::dead_letters), to the dead-letter place
  uint64_t duplicates = 0;     // events at or below the high-water mark, not written again
  // Seqs below the batch that the agent no longer has and the sink's mark did not cover
  // (marks.hpp): counted as lost, never waited for.
  uint64_t gap_lost = 0;
  uint64_t gap_first = 0;  // the lost range, when gap_lost > 0
};

using SinkCallback = std::function<void(const Result<SinkResult>&)>;

class Sink {
 public:
  virtual ~Sink() = default;
  // Writes the batch durably (the callback runs after fsync / the broker's confirmation), or
  // fails it; a failed batch was not written and may be sent again.
  virtual void write(SinkBatch batch, SinkCallback done) = 0;
  // Why the sink cannot take writes now (for /readyz), or nullopt when it can.
  virtual std::optional<std::string> not_ready_reason() const = 0;
  // A session for `agent_id` began on this gateway. The device may have come from another
  // gateway that wrote more of its events: a sink shared between gateways (Kafka) reloads
  // the agent's high-water mark before its next write.
  virtual void session_started(const std::string& agent_id) { (void)agent_id; }
  // The sink's own counters, as Prometheus text appended to GET /metrics.
  virtual void append_metrics(std::string& out) const { (void)out; }
};

}  // namespace outpost::uplink

template <>
struct std::is_error_code_enum<outpost::uplink::sink_errc> : std::true_type {};
