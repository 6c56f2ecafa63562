#include "agent/relay/relay_sink.hpp"

#include <chrono>
#include <cstdlib>

#include "agent/buffer/buffer_inspector.hpp"
#include "proto/event_codec.hpp"
#include "proto/field_reader.hpp"

namespace outpost::agent {

namespace {

constexpr std::string_view kMarkPrefix = "relay:";
constexpr std::string_view kCertificatePrefix = "relay-cert:";

std::string to_hex(std::string_view bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

std::optional<std::string> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return out;
}

// A device's event as the relay stores it: its kind, priority and time from its bytes.
NewEvent relayed_event(const std::string& device, const wire::EventView& e) {
  NewEvent ne;
  ne.kind = kind_from_number(e.kind).value_or(EventKind::json);
  proto::FieldReader r(e.bytes);
  proto::Field f;
  while (r.next(f)) {
    if (f.type != proto::kVarint) continue;
    if (f.number == 4) ne.event_time_ns = static_cast<int64_t>(f.value);
    if (f.number == 7) ne.priority = static_cast<int32_t>(static_cast<int64_t>(f.value));
  }
  ne.body = proto::relayed_body(e.bytes, device, e.seq, e.collected_at);
  return ne;
}

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

uplink::sink_errc sink_code(const Error& e) {
  if (e.code == buffer_errc::full || e.code == buffer_errc::disk_full) {
    return uplink::sink_errc::disk_full;
  }
  if (e.code == buffer_errc::queue_full) return uplink::sink_errc::queue_full;
  if (e.code == buffer_errc::closed || e.code == buffer_errc::busy) {
    return uplink::sink_errc::unavailable;
  }
  return uplink::sink_errc::io;
}

}  // namespace

RelaySink::RelaySink(Buffer& buffer, RelaySinkOptions options)
    : buffer_(buffer), opt_(std::move(options)) {}

RelaySink::~RelaySink() = default;

Result<std::unique_ptr<RelaySink>> RelaySink::open(Buffer& buffer, RelaySinkOptions options) {
  std::unique_ptr<RelaySink> sink(new RelaySink(buffer, std::move(options)));
  if (!sink->recount()) {
    return make_error(buffer_errc::io,
                      "relay: cannot count the devices' backlog in " + sink->opt_.buffer_path);
  }
  auto rows = buffer.read_progress(kMarkPrefix);
  if (!rows) return rows.error();
  for (const SourceProgress& p : *rows) {
    const std::string device = p.key.substr(kMarkPrefix.size());
    sink->book_.set_mark(device, std::strtoull(p.value.c_str(), nullptr, 10));
  }
  return sink;
}

void RelaySink::write(uplink::SinkBatch batch, uplink::SinkCallback done) {
  {
    std::lock_guard lock(mu_);
    Device& d = devices_[batch.agent_id];
    if (d.busy) {  // after the one being committed: its outcome decides this one
      queues_[batch.agent_id].push_back({std::move(batch), std::move(done)});
      return;
    }
    d.busy = true;
  }
  start({std::move(batch), std::move(done)});
}

void RelaySink::start(Pending p) {
  const std::string device = p.batch.agent_id;
  uplink::MarkDecision decision;
  {
    std::lock_guard lock(mu_);
    uplink::MarkBook::Group marks(book_);
    decision = marks.admit(p.batch);
    if (decision.refuse) {
      marks.commit();  // the refusal holds the device's later batches back
      ++devices_[device].refused;
    }
  }
  if (decision.refuse) {
    p.done(make_error(uplink::sink_errc::gap, *decision.refuse));
    finish(device);
    return;
  }
  std::vector<NewEvent> events;
  uplink::SinkResult result;
  uint64_t bytes = 0;
  for (const wire::EventView e : p.batch.events) {
    if (e.seq <= decision.mark) {
      ++result.duplicates;
      continue;
    }
    events.push_back(relayed_event(device, e));
    bytes += events.back().body.size();
  }
  result.written = events.size();
  if (auto over = over_cap(device, bytes)) {
    {
      std::lock_guard lock(mu_);
      book_.failed(device, p.batch.first_seq);  // nothing of the device overtakes it
      ++devices_[device].over_cap;
      ++devices_[device].refused;
    }
    const Error e = make_error(uplink::sink_errc::queue_full, *over);
    p.done(e);
    finish(device);
    return;
  }
  // A gap the device cannot fill is the gateway's to count: the relay only passes on what it
  // has (uplink/marks.hpp).
  const uint64_t mark = std::max(decision.mark, p.batch.last_seq);
  auto batch = std::make_shared<Pending>(std::move(p));
  buffer_.append_with_progress(
      std::move(events), SourceProgress{std::string(kMarkPrefix) + device, std::to_string(mark)},
      [this, batch, device, decision, result, bytes](const Result<AppendResult>& r) {
        if (r) {
          std::lock_guard lock(mu_);
          uplink::MarkBook::Group marks(book_);
          (void)marks.admit(batch->batch);
          marks.written(batch->batch, decision);
          marks.commit();
          Device& d = devices_[device];
          d.events += result.written;
          d.duplicates += result.duplicates;
          d.backlog_events += result.written;
          d.backlog_bytes += bytes;
          failure_.reset();
        } else {
          std::lock_guard lock(mu_);
          book_.failed(device, batch->batch.first_seq);
          ++devices_[device].refused;
          if (r.error().code != buffer_errc::full) failure_ = r.error().describe();
        }
        Result<uplink::SinkResult> answer =
            r ? Result<uplink::SinkResult>(result)
              : Result<uplink::SinkResult>(make_error(sink_code(r.error()), r.error().message));
        // The next batch of the device first: once `done` has answered, the sink may be gone
        // (its owner waits for nothing else; ASan found the test's sink freed under finish()).
        finish(device);
        batch->done(answer);
      });
}

std::optional<std::string> RelaySink::over_cap(const std::string& device, uint64_t bytes) {
  if (opt_.device_max_bytes == 0 || bytes == 0) return std::nullopt;
  auto backlog = [&] {
    std::lock_guard lock(mu_);
    return devices_[device].backlog_bytes;
  };
  if (backlog() + bytes <= opt_.device_max_bytes) return std::nullopt;
  // Rows the buffer removed by itself are not in the counts: count again before refusing.
  const int64_t now = steady_ns();
  bool stale = false;
  {
    std::lock_guard lock(mu_);
    stale = now - last_recount_ns_ > 10'000'000'000;
  }
  if (stale) recount();
  const uint64_t has = backlog();
  if (has + bytes <= opt_.device_max_bytes) return std::nullopt;
  return "device " + device + " has " + std::to_string(has) +
         " bytes waiting in the site's buffer; its batch of " + std::to_string(bytes) +
         " would pass relay.device_max_bytes (" + std::to_string(opt_.device_max_bytes) + ")";
}

bool RelaySink::recount() {
  std::map<std::string, std::pair<uint64_t, uint64_t>> counts;
  if (!opt_.buffer_path.empty()) {
    auto inspector = BufferInspector::open(opt_.buffer_path);
    if (!inspector) return false;
    auto n = inspector->scan({}, [&](const StoredEvent& e) {
      if (auto relayed = proto::relayed_identity(e.body)) {
        auto& c = counts[std::string(relayed->agent_id)];
        ++c.first;
        c.second += e.body.size();
      }
      return true;
    });
    if (!n) return false;
  }
  std::lock_guard lock(mu_);
  for (auto& [device, d] : devices_) d.backlog_events = d.backlog_bytes = 0;
  for (const auto& [device, c] : counts) {
    devices_[device].backlog_events = c.first;
    devices_[device].backlog_bytes = c.second;
  }
  last_recount_ns_ = steady_ns();
  return true;
}

void RelaySink::forwarded(const std::string& device, uint64_t events, uint64_t bytes) {
  std::lock_guard lock(mu_);
  Device& d = devices_[device];
  d.backlog_events -= std::min(d.backlog_events, events);
  d.backlog_bytes -= std::min(d.backlog_bytes, bytes);
}

void RelaySink::connection(const std::string& device, bool open) {
  std::lock_guard lock(mu_);
  Device& d = devices_[device];
  d.connected += open ? 1 : -1;
  if (d.connected < 0) d.connected = 0;
}

void RelaySink::finish(const std::string& device) {
  std::optional<Pending> next;
  {
    std::lock_guard lock(mu_);
    auto q = queues_.find(device);
    if (q == queues_.end() || q->second.empty()) {
      devices_[device].busy = false;
      return;
    }
    next.emplace(std::move(q->second.front()));
    q->second.pop_front();
  }
  start(std::move(*next));
}

std::optional<std::string> RelaySink::not_ready_reason() const {
  std::lock_guard lock(mu_);
  return failure_;
}

void RelaySink::session_started(const std::string& agent_id) {
  std::lock_guard lock(mu_);
  book_.session_started(agent_id);
  ++devices_[agent_id].sessions;
}

void RelaySink::remember_certificate(const std::string& device, std::string_view der) {
  buffer_.append_with_progress({}, {std::string(kCertificatePrefix) + device, to_hex(der)},
                               [](const Result<AppendResult>&) {});
}

std::optional<std::string> RelaySink::certificate(const std::string& device) {
  const std::string key = std::string(kCertificatePrefix) + device;
  auto rows = buffer_.read_progress(key);
  if (!rows) return std::nullopt;
  for (const SourceProgress& p : *rows) {
    if (p.key == key) return from_hex(p.value);
  }
  return std::nullopt;
}

void RelaySink::append_metrics(std::string& out) const {
  auto stats = buffer_.stats();  // before the lock: the buffer's writer calls back into the sink
  std::lock_guard lock(mu_);
  auto series = [&](const char* name, const char* help, auto field) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n";
    for (const auto& [device, d] : devices_) {
      out += std::string(name) + "{device=\"" + device + "\"} " + std::to_string(d.*field) + "\n";
    }
  };
  series("outpost_agent_relay_device_events_total",
         "Events of a device stored in this relay's buffer.", &Device::events);
  series("outpost_agent_relay_device_duplicates_total",
         "Events of a device it sent again and the relay had already.", &Device::duplicates);
  series("outpost_agent_relay_device_retry_later_total",
         "Batches of a device answered retry-later (buffer full, a gap).", &Device::refused);
  series("outpost_agent_relay_device_sessions_total", "Sessions of a device with this relay.",
         &Device::sessions);
  series("outpost_agent_relay_device_over_cap_total",
         "Batches of a device refused for relay.device_max_bytes (it keeps them).",
         &Device::over_cap);
  auto gauge = [&](const char* name, const char* help, auto field) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n";
    for (const auto& [device, d] : devices_) {
      out += std::string(name) + "{device=\"" + device + "\"} " + std::to_string(d.*field) + "\n";
    }
  };
  gauge("outpost_agent_relay_device_connected", "Sessions of the device open now.",
        &Device::connected);
  gauge("outpost_agent_relay_device_backlog_events",
        "Events of the device in this relay's buffer, not yet acknowledged by the gateway.",
        &Device::backlog_events);
  gauge("outpost_agent_relay_device_backlog_bytes", "The same, in bytes.", &Device::backlog_bytes);
  // What the site's buffer dropped of each device (max_age, drop_oldest, purge), by reason.
  if (stats && !stats->origin_dropped.empty()) {
    out +=
        "# HELP outpost_agent_relay_device_dropped_total Events of a device the site's buffer "
        "dropped, by reason.\n# TYPE outpost_agent_relay_device_dropped_total counter\n";
    for (const OriginDropCount& d : stats->origin_dropped) {
      out += "outpost_agent_relay_device_dropped_total{device=\"" + d.agent_id + "\",reason=\"" +
             std::string(drop_reason_name(d.reason)) + "\"} " + std::to_string(d.count) + "\n";
    }
  }
}

}  // namespace outpost::agent
