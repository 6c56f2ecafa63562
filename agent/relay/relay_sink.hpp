#pragma once
// Where an agent relaying for the devices of its site (`[relay]`, docs/install.md, "Site
// gateways") puts their batches: its own buffer. The relay runs the gateway's server
// (uplink/server/) with this as its Sink.
//
// A device's batch is acknowledged only once its events are committed in the buffer, under
// the device's own agent_id and seq (proto::relayed_body), so that the gateway's dedupe by
// (agent_id, seq) holds through the relay. Per device the sinks' rule applies
// (uplink/marks.hpp): events at or below the device's mark are duplicates (a device resending
// after the relay crashed), and a batch above a gap waits for the missing one, so the relay
// never holds a device's events out of order. The mark is stored with the events, in the same
// transaction (the buffer's source progress, key "relay:DEVICE"). One batch per device is
// committed at a time; devices go in parallel. A full buffer answers retry-later: the device
// keeps its events.
//
// The devices' certificates are kept too (key "relay-cert:DEVICE", the DER in hex), for the
// forwarder to present to the gateway with each device's first batch of a session.
//
// Per device it knows the backlog in the buffer (counted at open, added to as batches are
// stored, taken from as the forwarder's batches are acknowledged: forwarded()); with a
// per-device cap (relay.device_max_bytes) a device over it is answered retry-later and keeps
// its events, so one chatty device cannot fill the site buffer for the others. Rows the buffer
// removes by itself (max_age, drop_oldest, purge) are not seen: before refusing a device, the
// backlog is counted again from the file (at most every 10 s).
//
// Thread-safety: every method may be called from any thread. The Buffer outlives the sink.

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "agent/buffer/buffer.hpp"
#include "uplink/marks.hpp"
#include "uplink/sink.hpp"

namespace outpost::agent {

struct RelaySinkOptions {
  std::string buffer_path;        // read (read-only) to count the backlog per device
  uint64_t device_max_bytes = 0;  // per device, in the buffer; 0: only the buffer's own cap
};

class RelaySink final : public uplink::Sink {
 public:
  // Loads the devices' marks from the buffer and counts their backlog.
  static Result<std::unique_ptr<RelaySink>> open(Buffer& buffer, RelaySinkOptions options);
  ~RelaySink() override;

  void write(uplink::SinkBatch batch, uplink::SinkCallback done) override;
  std::optional<std::string> not_ready_reason() const override;
  void session_started(const std::string& agent_id) override;
  // outpost_agent_relay_device_* series by device, as Prometheus text.
  void append_metrics(std::string& out) const override;

  // Keeps a device's certificate (DER) as it presented it. Queued before any of the events
  // its session sends, so it is committed no later than they are.
  void remember_certificate(const std::string& device, std::string_view der);
  // The certificate kept for a device, or nullopt.
  std::optional<std::string> certificate(const std::string& device);

  // The gateway acknowledged `events` (`bytes` of bodies) of the device: off its backlog.
  void forwarded(const std::string& device, uint64_t events, uint64_t bytes);
  // A session of the device opened or closed (the connected gauge).
  void connection(const std::string& device, bool open);

 private:
  struct Pending {
    uplink::SinkBatch batch;
    uplink::SinkCallback done;
  };
  RelaySink(Buffer& buffer, RelaySinkOptions options);
  // Counts every device's backlog from the file; false when it cannot be read.
  bool recount();
  // Why the device's batch of `bytes` would pass its cap, or nullopt.
  std::optional<std::string> over_cap(const std::string& device, uint64_t bytes);
  void start(Pending p);
  // The device's batch was answered: its next waiting one starts.
  void finish(const std::string& device);

  Buffer& buffer_;
  RelaySinkOptions opt_;
  mutable std::mutex mu_;
  int64_t last_recount_ns_ = 0;
  uplink::MarkBook book_;
  struct Device {
    bool busy = false;    // a batch of it is being committed
    uint64_t events = 0;  // stored
    uint64_t duplicates = 0;
    uint64_t refused = 0;  // batches answered retry-later
    int64_t sessions = 0;
    int64_t connected = 0;                           // sessions open now
    uint64_t backlog_events = 0, backlog_bytes = 0;  // in the buffer, not yet acknowledged
    uint64_t over_cap = 0;                           // batches refused for relay.device_max_bytes
  };
  std::map<std::string, Device> devices_;
  std::map<std::string, std::deque<Pending>> queues_;
  std::optional<std::string> failure_;  // the last failed commit, until one succeeds
};

}  // namespace outpost::agent
