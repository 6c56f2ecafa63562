#include "agent/forwarder/forwarder.hpp"

#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "agent/forwarder/pacing.hpp"
#include "agent/forwarder/tls_stream.hpp"
#include "common/codec/zstd_codec.hpp"
#include "common/log.hpp"
#include "common/tls/context_source.hpp"
#include "common/units.hpp"
#include "proto/event_codec.hpp"
#include "uplink/agent_protocol.hpp"

namespace outpost::agent {
namespace {

constexpr size_t kMaxCommittingAcks = 64;  // beyond this, wait for the oldest ack's commit
constexpr int64_t kPollWhileWindowOpenNs = 20'000'000;  // new events are looked for this often

Error net_error(const std::string& what) {
  return make_error(std::make_error_code(std::errc::io_error), what);
}

// Whether a session may go on with `b` instead of `a`: they differ at most in what applies
// at once (the upload cap, the expiry warning, the TLS files' look interval).
bool same_session(const ForwarderOptions& a, const ForwarderOptions& b) {
  return a.endpoints == b.endpoints && a.server_name == b.server_name && a.ca_file == b.ca_file &&
         a.cert_file == b.cert_file && a.key_file == b.key_file && a.agent_id == b.agent_id &&
         a.batch_max_events == b.batch_max_events && a.batch_max_bytes == b.batch_max_bytes &&
         a.window == b.window && a.zstd_level == b.zstd_level &&
         a.connect_timeout_ns == b.connect_timeout_ns && a.ack_timeout_ns == b.ack_timeout_ns &&
         a.backoff_initial_ns == b.backoff_initial_ns && a.backoff_max_ns == b.backoff_max_ns &&
         a.ping_interval_ns == b.ping_interval_ns && a.live_lane == b.live_lane;
}

}  // namespace

struct Forwarder::Impl {
  ForwarderOptions opt;
  Buffer& buffer;
  const Clock& clock;
  std::shared_ptr<spdlog::logger> log = log::get("forwarder");
  std::optional<codec::Compressor> compressor;
  std::unique_ptr<tls::ContextSource> tls_source;
  std::string tls_source_name;  // the server name it verifies
  std::atomic<bool> reload_asked{false};
  std::atomic<bool> reconfigure_asked{false};  // `next` holds new settings

  mutable std::mutex mu;
  std::condition_variable wake;
  bool stopping = false;
  ForwarderStatus status;
  std::optional<ForwarderOptions> next;  // reconfigure(): not yet in use
  std::thread thread;
  std::mt19937_64 rng{std::random_device{}()};
  UploadPacer pacer{opt.rate_limit_bytes_per_s};
  // A relaying agent: the last seq of its own events that a gateway acknowledged (0: none
  // since the process started). Its own events' seqs have holes where relayed events were
  // stored, so its batches of them start here, not at the last seq sent (docs/protocol.md,
  // "Relays").
  uint64_t own_acked = 0;

  Impl(ForwarderOptions o, Buffer& b, const Clock& c) : opt(std::move(o)), buffer(b), clock(c) {
    compressor.emplace(opt.zstd_level);
  }

  bool stop_requested() {
    std::lock_guard lock(mu);
    return stopping;
  }
  // Sleeps for `ns` of the clock's time or until stop() was called (or, with
  // `until_reconfigured`, new settings came); false when stopping.
  bool sleep_for(int64_t ns, bool until_reconfigured = false) {
    const int64_t deadline = clock.mono_ns() + ns;
    std::unique_lock lock(mu);
    while (!stopping && !(until_reconfigured && next) && clock.mono_ns() < deadline) {
      clock.wait_until(lock, wake, deadline);
    }
    return !stopping;
  }
  // reconfigure()'s settings: what applies at once is applied; true when the session must
  // end for the rest (the settings stay in `next` for apply_next()).
  bool take_next_in_session();
  // Between sessions: the new settings in use. True when there were any.
  bool apply_next();
  void set_status(const std::function<void(ForwarderStatus&)>& f) {
    std::lock_guard lock(mu);
    f(status);
  }

  void run();
  // One connection, until it fails or stop() is called. `progress` is set once a batch was
  // acknowledged (the backoff starts over).
  Result<void> session(const std::string& endpoint, bool& progress);
  Result<std::shared_ptr<tls::TlsContext>> context_for(const std::string& name);
  // Looks at the TLS files (reads them when changed or asked to): true when new ones are in
  // use, for the next handshake.
  bool refresh_tls();
  void tls_in_use(const tls::TlsContext& c);
};

bool Forwarder::Impl::take_next_in_session() {
  if (!reconfigure_asked.exchange(false)) return false;
  std::lock_guard lock(mu);
  if (!next) return false;
  if (next->rate_limit_bytes_per_s != opt.rate_limit_bytes_per_s) {
    log->info("uplink.rate_limit: {} from now on",
              next->rate_limit_bytes_per_s == 0
                  ? std::string("none")
                  : format_bytes(next->rate_limit_bytes_per_s) + "/s");
    pacer = UploadPacer(next->rate_limit_bytes_per_s);
  }
  opt.rate_limit_bytes_per_s = next->rate_limit_bytes_per_s;
  opt.certificate_warn_days = next->certificate_warn_days;
  opt.tls_reload_interval_ns = next->tls_reload_interval_ns;
  if (same_session(opt, *next)) {
    next.reset();
    return false;
  }
  return true;
}

bool Forwarder::Impl::apply_next() {
  std::optional<ForwarderOptions> n;
  {
    std::lock_guard lock(mu);
    n.swap(next);
  }
  reconfigure_asked = false;
  if (!n) return false;
  if (n->ca_file != opt.ca_file || n->cert_file != opt.cert_file || n->key_file != opt.key_file) {
    tls_source.reset();  // read the new files at the next handshake
  }
  if (n->zstd_level != opt.zstd_level) compressor.emplace(n->zstd_level);
  if (n->rate_limit_bytes_per_s != opt.rate_limit_bytes_per_s) {
    pacer = UploadPacer(n->rate_limit_bytes_per_s);
  }
  n->device_certificate = std::move(opt.device_certificate);
  n->on_relayed_ack = std::move(opt.on_relayed_ack);
  opt = std::move(*n);
  log->info("uplink settings in use: gateways {}, window {}, batches of {} events / {}",
            fmt::join(opt.endpoints, ", "), opt.window, opt.batch_max_events,
            format_bytes(opt.batch_max_bytes));
  return true;
}

void Forwarder::Impl::run() {
  Backoff backoff(opt.backoff_initial_ns, opt.backoff_max_ns);
  size_t index = 0;
  while (!stop_requested()) {
    if (apply_next()) {  // new settings: start over with the first of the new gateways
      backoff = Backoff(opt.backoff_initial_ns, opt.backoff_max_ns);
      index = 0;
    }
    const std::string endpoint = opt.endpoints[index % opt.endpoints.size()];
    bool progress = false;
    auto r = session(endpoint, progress);
    set_status([&](ForwarderStatus& s) {
      s.connected = false;
      s.last_error = r ? "" : r.error().describe();
    });
    if (stop_requested()) break;
    if (progress) backoff.reset();
    if (!r) {
      log->warn("uplink {}: {}; next attempt in about {} ms", endpoint, r.error().describe(),
                backoff.delay() / 1'000'000);
      ++index;  // fail over to the next gateway
    }
    {
      std::lock_guard lock(mu);
      if (next && r) continue;  // the session ended for new settings: at once
    }
    if (!sleep_for(backoff.next(rng), true)) break;
  }
}

Result<std::shared_ptr<tls::TlsContext>> Forwarder::Impl::context_for(const std::string& name) {
  if (!tls_source || tls_source_name != name) {
    tls::ContextOptions o;
    o.role = tls::Role::client;
    o.files = {opt.ca_file, opt.cert_file, opt.key_file, ""};
    o.server_name = name;
    auto source = tls::ContextSource::create(o);
    if (!source) return source.error();
    tls_source = std::move(*source);
    tls_source_name = name;
    tls_in_use(*tls_source->current());
  } else {
    (void)refresh_tls();
  }
  return tls_source->current();
}

void Forwarder::Impl::tls_in_use(const tls::TlsContext& c) {
  set_status([&](ForwarderStatus& s) { s.certificate_not_after = c.not_after(); });
  if (c.not_after() == 0) return;
  const int64_t days = (c.not_after() - clock.now_ns() / 1'000'000'000) / 86'400;
  if (days < opt.certificate_warn_days) {
    log->warn(
        "the device certificate {} expires in {} days ({}; serial {}): renew it "
        "(docs/install.md)",
        opt.cert_file, days, days < 0 ? "already expired" : "uplink.certificate_warn_days",
        c.serial());
  }
}

bool Forwarder::Impl::refresh_tls() {
  if (!tls_source) return false;
  auto r = tls_source->refresh(reload_asked.exchange(false));
  if (r.refused) {
    set_status([](ForwarderStatus& s) { ++s.tls_reloads_refused; });
    log->error("uplink TLS files changed but cannot be used; the ones in use stay: {}",
               r.refused->describe());
    return false;
  }
  if (!r.changed) return false;
  set_status([](ForwarderStatus& s) { ++s.tls_reloads_ok; });
  log->info("uplink TLS files read: certificate serial {}, expires {}", r.context->serial(),
            format_time_ns(r.context->not_after() * 1'000'000'000));
  tls_in_use(*r.context);
  return true;
}

Result<void> Forwarder::Impl::session(const std::string& endpoint, bool& progress) {
  auto colon = endpoint.rfind(':');
  if (colon == std::string::npos) return net_error("endpoint " + endpoint + " is not HOST:PORT");
  std::string host = endpoint.substr(0, colon);
  const std::string port = endpoint.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  auto context = context_for(opt.server_name.empty() ? host : opt.server_name);
  if (!context) return context.error();
  set_status([&](ForwarderStatus& s) { s.endpoint = endpoint; });
  auto connected = TlsFrameStream::connect(host, port, *context, clock,
                                           clock.mono_ns() + opt.connect_timeout_ns);
  if (!connected) return connected.error();
  TlsFrameStream& stream = **connected;

  auto stats = buffer.stats();
  if (!stats) return stats.error();
  uplink::AgentProtocolOptions po;
  po.agent_id = opt.agent_id;
  po.window = opt.window;
  po.batch_max_events = opt.batch_max_events;
  po.batch_max_bytes = opt.batch_max_bytes;
  po.setup_timeout_ns = opt.connect_timeout_ns;
  po.ack_timeout_ns = opt.ack_timeout_ns;
  po.ping_interval_ns = opt.ping_interval_ns;
  uplink::AgentProtocol protocol(po, stats->acked_seq);
  protocol.start(clock.mono_ns());

  const bool relaying = static_cast<bool>(opt.device_certificate);
  std::set<std::string> vouched;     // relayed devices whose certificate went in this session
  std::set<uint64_t> own_in_flight;  // relaying: local last seqs of own batches in flight
  struct Relayed {
    std::string device;
    uint64_t events, bytes;
  };
  std::map<uint64_t, Relayed> relayed_in_flight;  // relaying: by local last seq
  uint64_t own_next_first = own_acked + 1;
  // The live lane (lanes.hpp): its book of the two lanes, and what each takes.
  std::optional<LaneBook> lanes;
  if (opt.live_lane.enabled() && !relaying) {
    lanes.emplace(opt.live_lane.share_percent, stats->acked_seq);
  }
  const LiveLaneOptions live = opt.live_lane;
  const LaneFilter in_lane[2] = {[&live](EventKind k, int32_t p) { return !live.takes(k, p); },
                                 [&live](EventKind k, int32_t p) { return live.takes(k, p); }};
  auto lane_status = [&] {
    if (!lanes) return;
    set_status([&](ForwarderStatus& s) {
      s.live_lane = true;
      for (Lane l : {kBulkLane, kLiveLane}) {
        s.lane_oldest_collected_ns[l] = lanes->oldest_collected_ns(l);
      }
    });
  };

  // Acks being committed by the buffer's writer: the forwarder goes on sending meanwhile
  // (waiting for each commit's fsync left the uplink idle), checks each result as it comes,
  // and waits for the rest when the session ends, so the next one starts from them.
  std::deque<std::future<Result<void>>> committing;
  struct WaitForAcks {
    std::deque<std::future<Result<void>>>& acks;
    ~WaitForAcks() {
      for (auto& a : acks) a.wait();
    }
  } wait_for_acks{committing};
  auto check_acks = [&]() -> Result<void> {
    while (!committing.empty() &&
           (committing.size() > kMaxCommittingAcks ||
            committing.front().wait_for(std::chrono::seconds(0)) == std::future_status::ready)) {
      Result<void> r = committing.front().get();
      committing.pop_front();
      if (!r) return r;
    }
    return {};
  };
  // Carries out what the protocol decided: frames out, acks to the buffer, the status.
  auto carry_out = [&]() -> Result<void> {
    uplink::AgentOutput out = protocol.take_output();
    if (out.connected) {
      stream.set_max_frame_bytes(1u << 20);  // the gateway sends only small frames
      set_status([&](ForwarderStatus& s) {
        s.connected = true;
        ++s.connects;
      });
      log->info("uplink {}: connected as {} ({}, {}), window {}", endpoint,
                protocol.welcome().identity(), stream.tls_version(), stream.cipher_suite(),
                protocol.window());
    }
    for (const uplink::AckedBatch& a : out.acked) {
      if (own_in_flight.erase(a.last_seq) > 0) own_acked = std::max(own_acked, a.last_seq);
      if (auto r = relayed_in_flight.find(a.last_seq); r != relayed_in_flight.end()) {
        if (opt.on_relayed_ack)
          opt.on_relayed_ack(r->second.device, r->second.events, r->second.bytes);
        relayed_in_flight.erase(r);
      }
      if (lanes) {
        // The buffer deletes up to where both lanes are acknowledged.
        (void)lanes->acked(a.last_seq);
        if (auto up_to = lanes->deletable()) committing.push_back(buffer.ack_async(*up_to));
      } else {
        committing.push_back(buffer.ack_async(a.last_seq));
      }
      progress = true;
      set_status([&](ForwarderStatus& s) {
        ++s.batches_acked;
        s.events_acked += a.events;
        s.last_ack_ns = clock.now_ns();
        s.last_error.clear();
      });
    }
    if (out.pause) {
      log->info("uplink {}: gateway asks to retry later ({})", endpoint, *out.pause);
      // The batches in flight are abandoned and sent again from the last ack.
      own_in_flight.clear();
      relayed_in_flight.clear();
      own_next_first = own_acked + 1;
      vouched.clear();
      if (lanes) lanes->abandon();
    }
    if (!out.acked.empty() || out.pause) lane_status();
    for (const v1::Frame& f : out.frames) {
      if (auto r = stream.send(f, clock.mono_ns() + opt.ack_timeout_ns); !r) return r;
    }
    return {};
  };

  std::string payload;  // one batch's stamped events; its capacity is kept between batches
  // New TLS files (a renewed certificate): send nothing more, let the batches in flight be
  // acknowledged, then end the session; the next handshake uses them.
  bool rotating = false;
  int64_t next_tls_look =
      opt.tls_reload_interval_ns > 0 ? clock.mono_ns() + opt.tls_reload_interval_ns : INT64_MAX;
  while (!stop_requested()) {
    if (auto r = check_acks(); !r) return r;
    if (!rotating && take_next_in_session()) {
      rotating = true;
      log->info(
          "uplink {}: new settings: finishing the {} batches in flight, then reconnecting "
          "with them",
          endpoint, protocol.in_flight());
    }
    if (!rotating && (reload_asked || clock.mono_ns() >= next_tls_look)) {
      if (opt.tls_reload_interval_ns > 0)
        next_tls_look = clock.mono_ns() + opt.tls_reload_interval_ns;
      if (refresh_tls()) {
        rotating = true;
        log->info(
            "uplink {}: new TLS files: finishing the {} batches in flight, then "
            "reconnecting with them",
            endpoint, protocol.in_flight());
      }
    }
    if (rotating && protocol.in_flight() == 0) {
      for (auto& a : committing) {
        if (auto r = a.get(); !r) return r;
      }
      committing.clear();
      stream.close(clock.mono_ns() + 1'000'000'000);
      progress = true;
      return {};
    }
    // Fill the window.
    while (!rotating && protocol.may_send(clock.mono_ns())) {
      payload.clear();
      uint64_t last_seq = 0;
      // One device's events per batch: the relay's own (origin ""), or a device's it relays
      // (docs/protocol.md, "Relays"), whose seqs the batch then names.
      std::optional<std::string> origin;
      uint64_t origin_first = 0, origin_last = 0, body_bytes = 0;
      Lane lane = kBulkLane;
      uint64_t scanned = 0;
      int64_t first_collected = 0;
      auto stamp = [&](const StoredEventRef& e) {
        if (first_collected == 0) first_collected = e.collected_at_ns;
        proto::append_stamped_delimited(payload, e.body, opt.agent_id, e.seq, e.collected_at_ns);
        last_seq = e.seq;
        return true;
      };
      Result<size_t> count = size_t{0};
      if (lanes) {
        // The live lane first while its share allows; a lane with nothing lets the other go.
        const Lane first = lanes->first_choice();
        for (Lane l : {first, first == kLiveLane ? kBulkLane : kLiveLane}) {
          count = buffer.visit_lane(lanes->scanned(l), protocol.max_events(), protocol.max_bytes(),
                                    in_lane[l], stamp, scanned);
          if (!count || *count > 0) {
            lane = l;
            break;
          }
          lanes->found_nothing(l, scanned);
          // A lane that looked further with nothing in flight may let the buffer delete more.
          if (auto up_to = lanes->deletable()) committing.push_back(buffer.ack_async(*up_to));
        }
      } else {
        count = buffer.visit_batch(protocol.cursor(), protocol.max_events(), protocol.max_bytes(),
                                   [&](const StoredEventRef& e) {
                                     const auto relayed = proto::relayed_identity(e.body);
                                     const std::string_view who =
                                         relayed ? relayed->agent_id : std::string_view();
                                     if (!origin) {
                                       origin = std::string(who);
                                       origin_first = relayed ? relayed->seq : 0;
                                     } else if (*origin != who) {
                                       return false;
                                     }
                                     if (relayed) origin_last = relayed->seq;
                                     body_bytes += e.body.size();
                                     proto::append_stamped_delimited(payload, e.body, opt.agent_id,
                                                                     e.seq, e.collected_at_ns);
                                     last_seq = e.seq;
                                     return true;
                                   });
      }
      if (!count) return count.error();
      if (*count == 0) {
        lane_status();
        break;
      }
      auto z = compressor->compress(payload);
      if (!z) return z.error();
      const size_t wire_bytes = z->size();
      // The upload cap first: the batch's ack timeout runs from when it is sent.
      if (int64_t wait = pacer.wait_for(wire_bytes, clock.mono_ns()); wait > 0) {
        if (!sleep_for(wait)) break;
      }
      v1::Frame f = protocol.batch(last_seq, static_cast<uint32_t>(*count), v1::CODEC_ZSTD,
                                   std::move(*z), payload.size(), clock.mono_ns());
      if (lanes) {
        f.mutable_batch()->set_first_seq(lanes->next_first(lane));
        if (lane == kLiveLane) f.mutable_batch()->set_lane(1);
        lanes->sent(lane, last_seq, scanned, wire_bytes, first_collected);
        lane_status();
      }
      if (relaying && origin && origin->empty()) {
        f.mutable_batch()->set_first_seq(own_next_first);
        own_next_first = last_seq + 1;
        own_in_flight.insert(last_seq);
      }
      if (origin && !origin->empty()) {
        v1::Batch& b = *f.mutable_batch();
        b.set_origin_agent_id(*origin);
        b.set_first_seq(origin_first);
        b.set_last_seq(origin_last);
        relayed_in_flight[last_seq] = {*origin, static_cast<uint64_t>(*count), body_bytes};
        // The device's certificate with its first batch of the session, so that the gateway
        // can check this relay may speak for it.
        if (vouched.insert(*origin).second) {
          auto certificate =
              opt.device_certificate ? opt.device_certificate(*origin) : std::nullopt;
          if (!certificate) {
            log->error(
                "uplink {}: no certificate of device {} is kept; the gateway will refuse "
                "its events",
                endpoint, *origin);
          }
          b.set_origin_certificate(certificate.value_or(""));
        }
      }
      if (auto r = stream.send(f, clock.mono_ns() + opt.ack_timeout_ns); !r) return r;
      set_status([&](ForwarderStatus& s) { s.bytes_sent += wire_bytes; });
    }
    if (auto r = protocol.on_timer(clock.mono_ns()); !r) return r;
    if (auto r = carry_out(); !r) return r;
    // Wait for acks, or for new events to send, or for the protocol's next deadline.
    const int64_t now = clock.mono_ns();
    const int64_t wait_until =
        std::min({protocol.next_timer(now), next_tls_look,
                  now + (protocol.may_send(now) ? kPollWhileWindowOpenNs : 1'000'000'000)});
    auto f = stream.receive(wait_until);
    while (true) {
      if (!f) return f.error();
      if (!*f) break;
      if (auto r = protocol.on_frame(**f, clock.mono_ns()); !r) return r;
      if (auto r = carry_out(); !r) return r;
      f = stream.receive(0);  // only what is already here
    }
  }
  stream.close(clock.mono_ns() + 1'000'000'000);
  return {};
}

Forwarder::Forwarder(ForwarderOptions options, Buffer& buffer, const Clock& clock)
    : impl_(std::make_unique<Impl>(std::move(options), buffer, clock)) {}

Forwarder::~Forwarder() { stop(); }

void Forwarder::start() {
  if (impl_->thread.joinable() || impl_->opt.endpoints.empty()) return;
  impl_->thread = std::thread([this] { impl_->run(); });
}

void Forwarder::stop() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void Forwarder::reconfigure(ForwarderOptions next) {
  {
    std::lock_guard lock(impl_->mu);
    impl_->next = std::move(next);
  }
  impl_->reconfigure_asked = true;
  impl_->wake.notify_all();
}

void Forwarder::reload_tls() {
  impl_->reload_asked = true;
  impl_->wake.notify_all();
}

ForwarderStatus Forwarder::status() const {
  std::lock_guard lock(impl_->mu);
  return impl_->status;
}

}  // namespace outpost::agent
