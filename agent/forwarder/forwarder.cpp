#include "agent/forwarder/forwarder.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "common/codec/zstd_codec.hpp"
#include "common/log.hpp"
#include "common/tls/tls.hpp"
#include "proto/event_codec.hpp"
#include "uplink/frame.hpp"

namespace outpost::agent {
namespace {

constexpr const char* kVersion = "0.1.0";
constexpr size_t kMaxCommittingAcks = 64;  // beyond this, wait for the oldest ack's commit

Error net_error(const std::string& what) {
  return make_error(std::make_error_code(std::errc::io_error), what);
}

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A TCP socket with deadlines on every operation (STYLE rule 5).
class Socket {
 public:
  ~Socket() { close(); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd() const { return fd_; }

  Result<void> connect(const std::string& host, const std::string& port, int64_t timeout_ns) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* list = nullptr;
    int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &list);
    if (rc != 0) return net_error("cannot resolve " + host + ": " + gai_strerror(rc));
    std::string last = "no address";
    for (addrinfo* a = list; a != nullptr; a = a->ai_next) {
      int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) continue;
      if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
        last = std::strerror(errno);
        ::close(fd);
        continue;
      }
      pollfd p{fd, POLLOUT, 0};
      int ready = ::poll(&p, 1, static_cast<int>(timeout_ns / 1'000'000));
      int err = 0;
      socklen_t len = sizeof err;
      if (ready == 1) ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (ready != 1 || err != 0) {
        last = ready == 0 ? "connect timed out" : std::strerror(err != 0 ? err : errno);
        ::close(fd);
        continue;
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      fd_ = fd;
      ::freeaddrinfo(list);
      return {};
    }
    ::freeaddrinfo(list);
    return net_error("cannot connect to " + host + ":" + port + ": " + last);
  }

  Result<void> send_all(std::string_view data, int64_t deadline_ns) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) {
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        return net_error(std::string("send: ") + std::strerror(errno));
      }
      if (auto r = wait(POLLOUT, deadline_ns); !r) return r.error();
    }
    return {};
  }

  // Reads what is there, waiting until the deadline; "" when the deadline passed.
  Result<std::string> receive(int64_t deadline_ns) {
    char buf[64 * 1024];
    while (true) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n > 0) return std::string(buf, static_cast<size_t>(n));
      if (n == 0) return net_error("the gateway closed the connection");
      if (errno != EAGAIN && errno != EINTR) {
        return net_error(std::string("recv: ") + std::strerror(errno));
      }
      auto ready = wait(POLLIN, deadline_ns);
      if (!ready) return ready.error();
      if (!*ready) return std::string();
    }
  }

 private:
  // True when ready, false when the deadline passed.
  Result<bool> wait(short events, int64_t deadline_ns) {
    int64_t left = deadline_ns - steady_ns();
    if (left <= 0) return false;
    pollfd p{fd_, events, 0};
    int rc = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(1, left / 1'000'000)));
    if (rc < 0 && errno != EINTR) return net_error(std::string("poll: ") + std::strerror(errno));
    return rc > 0;
  }

  int fd_ = -1;
};

struct InFlight {
  uint64_t batch_seq;
  uint64_t last_seq;
  uint32_t events;
  int64_t sent_ns;
};

}  // namespace

struct Forwarder::Impl {
  ForwarderOptions opt;
  Buffer& buffer;
  const Clock& clock;
  std::shared_ptr<spdlog::logger> log = log::get("forwarder");
  codec::Compressor compressor;
  std::shared_ptr<tls::TlsContext> tls_context;
  std::string tls_context_name;

  mutable std::mutex mu;
  std::condition_variable wake;
  bool stopping = false;
  ForwarderStatus status;
  std::thread thread;
  std::mt19937_64 rng{std::random_device{}()};
  double rate_tokens = 0;
  int64_t rate_last_ns = 0;

  Impl(ForwarderOptions o, Buffer& b, const Clock& c)
      : opt(std::move(o)), buffer(b), clock(c), compressor(opt.zstd_level) {}

  bool stop_requested() {
    std::lock_guard lock(mu);
    return stopping;
  }
  // Sleeps until `ns` passed or stop() was called; false when stopping.
  bool sleep_for(int64_t ns) {
    std::unique_lock lock(mu);
    return !wake.wait_for(lock, std::chrono::nanoseconds(ns), [this] { return stopping; });
  }
  void set_status(const std::function<void(ForwarderStatus&)>& f) {
    std::lock_guard lock(mu);
    f(status);
  }

  void run();
  // One connection, until it fails or stop() is called. `progress` is set once a batch was
  // acknowledged (the backoff starts over).
  Result<void> session(const std::string& endpoint, bool& progress);
  void pace(size_t bytes);
};

void Forwarder::Impl::run() {
  int64_t backoff = opt.backoff_initial_ns;
  size_t index = 0;
  while (!stop_requested()) {
    const std::string& endpoint = opt.endpoints[index % opt.endpoints.size()];
    bool progress = false;
    auto r = session(endpoint, progress);
    set_status([&](ForwarderStatus& s) {
      s.connected = false;
      s.last_error = r ? "" : r.error().describe();
    });
    if (stop_requested()) break;
    if (progress) backoff = opt.backoff_initial_ns;
    if (!r) {
      log->warn("uplink {}: {}; next attempt in about {} ms", endpoint, r.error().describe(),
                backoff / 1'000'000);
      ++index;  // fail over to the next gateway
    }
    // Full jitter over [backoff/2, backoff]: agents that lost the same gateway do not return
    // in lockstep.
    std::uniform_int_distribution<int64_t> jitter(backoff / 2, backoff);
    if (!sleep_for(jitter(rng))) break;
    backoff = std::min(opt.backoff_max_ns, backoff * 2);
  }
}

void Forwarder::Impl::pace(size_t bytes) {
  if (opt.rate_limit_bytes_per_s == 0) return;
  const double rate = static_cast<double>(opt.rate_limit_bytes_per_s);
  int64_t now = steady_ns();
  if (rate_last_ns == 0) rate_tokens = rate;  // one second of burst
  rate_tokens = std::min(rate, rate_tokens + static_cast<double>(now - rate_last_ns) / 1e9 * rate);
  rate_last_ns = now;
  rate_tokens -= static_cast<double>(bytes);
  if (rate_tokens < 0) sleep_for(static_cast<int64_t>(-rate_tokens / rate * 1e9));
}

Result<void> Forwarder::Impl::session(const std::string& endpoint, bool& progress) {
  auto colon = endpoint.rfind(':');
  if (colon == std::string::npos) return net_error("endpoint " + endpoint + " is not HOST:PORT");
  std::string host = endpoint.substr(0, colon);
  const std::string port = endpoint.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  const std::string name = opt.server_name.empty() ? host : opt.server_name;
  if (!tls_context || tls_context_name != name) {
    tls::ContextOptions o;
    o.role = tls::Role::client;
    o.files = {opt.ca_file, opt.cert_file, opt.key_file};
    o.server_name = name;
    auto ctx = tls::TlsContext::create(o);
    if (!ctx) return ctx.error();
    tls_context = *ctx;
    tls_context_name = name;
  }
  set_status([&](ForwarderStatus& s) { s.endpoint = endpoint; });
  Socket sock;
  if (auto r = sock.connect(host, port, opt.connect_timeout_ns); !r) return r;
  tls::TlsSession tls(tls_context);

  // Handshake, then Hello / Welcome, within the connect timeout.
  const int64_t setup_deadline = steady_ns() + opt.connect_timeout_ns;
  while (true) {
    auto done = tls.handshake();
    if (tls.has_output()) {
      if (auto r = sock.send_all(tls.take_output(), setup_deadline); !r) return r;
    }
    if (!done) return done.error();
    if (*done) break;
    auto in = sock.receive(setup_deadline);
    if (!in) return in.error();
    if (in->empty()) return net_error("TLS handshake timed out");
    tls.feed(*in);
  }
  wire::FrameDecoder decoder(64u << 20);
  auto send_frame = [&](const v1::Frame& f, int64_t deadline) -> Result<void> {
    if (auto r = tls.write(wire::encode_frame(f)); !r) return r;
    return sock.send_all(tls.take_output(), deadline);
  };
  // Reads until a frame is there or the deadline passes (nullopt).
  std::string plain;
  auto next_frame = [&](int64_t deadline) -> Result<std::optional<v1::Frame>> {
    while (true) {
      auto f = decoder.next();
      if (!f || *f) return f;
      auto in = sock.receive(deadline);
      if (!in) return in.error();
      if (in->empty()) return std::optional<v1::Frame>();
      tls.feed(*in);
      Result<size_t> n = size_t{0};
      while ((n = tls.read(plain, 64 * 1024)) && *n > 0) {
      }
      decoder.feed(plain);  // a Goodbye just before the close_notify still counts
      plain.clear();
      if (!n) {
        auto last = decoder.next();
        if (last && *last) return last;
        return n.error();
      }
      if (tls.has_output()) {
        if (auto r = sock.send_all(tls.take_output(), deadline); !r) return r.error();
      }
    }
  };

  v1::Frame hello;
  hello.mutable_hello()->set_agent_id(opt.agent_id);
  hello.mutable_hello()->set_software_version(kVersion);
  hello.mutable_hello()->add_codecs(v1::CODEC_ZSTD);
  if (auto r = send_frame(hello, setup_deadline); !r) return r;
  auto welcome = next_frame(setup_deadline);
  if (!welcome) return welcome.error();
  if (!*welcome) return net_error("no Welcome from the gateway in time");
  if ((*welcome)->has_goodbye()) {
    return net_error("the gateway refused the session: " + (*welcome)->goodbye().reason());
  }
  if (!(*welcome)->has_welcome()) return net_error("the gateway answered Hello with no Welcome");
  const v1::Welcome w = (*welcome)->welcome();
  const uint32_t window = std::max<uint32_t>(1, std::min(opt.window, w.max_in_flight_batches()));
  const size_t max_events =
      std::max<size_t>(1, std::min<size_t>(opt.batch_max_events, w.max_events_per_batch()));
  const size_t max_bytes = std::min<size_t>(
      opt.batch_max_bytes,
      std::max<size_t>(4096,
                       static_cast<size_t>(std::min<uint64_t>(
                           {w.max_decompressed_bytes() / 2, w.max_frame_bytes() / 2, SIZE_MAX}))));
  decoder.set_max_frame_bytes(1u << 20);  // the gateway sends only small frames
  set_status([&](ForwarderStatus& s) {
    s.connected = true;
    ++s.connects;
  });
  log->info("uplink {}: connected as {} ({}, {}), window {}", endpoint, w.identity(), tls.version(),
            tls.cipher_suite(), window);

  // Batches cover contiguous seq ranges starting above the buffer's acked seq, so that the
  // gateway can tell a gap (an earlier batch not written) from a duplicate.
  auto stats = buffer.stats();
  if (!stats) return stats.error();
  std::deque<InFlight> in_flight;
  uint64_t next_batch_seq = 1;
  uint64_t ignore_below = 0;          // acks of batches abandoned by a retry-later
  uint64_t acked = stats->acked_seq;  // the last seq the gateway acknowledged
  uint64_t cursor = acked;            // the last seq sent
  int64_t last_sent_ns = steady_ns();
  int64_t resume_ns = 0;  // after a retry-later: send nothing before this
  std::string payload;    // one batch's stamped events; its capacity is kept between batches
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
  while (!stop_requested()) {
    if (auto r = check_acks(); !r) return r;
    // Fill the window.
    while (in_flight.size() < window && steady_ns() >= resume_ns) {
      payload.clear();
      uint64_t last_seq = 0;
      auto count = buffer.visit_batch(cursor, max_events, max_bytes, [&](const StoredEventRef& e) {
        proto::append_stamped_delimited(payload, e.body, opt.agent_id, e.seq, e.collected_at_ns);
        last_seq = e.seq;
      });
      if (!count) return count.error();
      if (*count == 0) break;
      auto z = compressor.compress(payload);
      if (!z) return z.error();
      v1::Frame f;
      auto* b = f.mutable_batch();
      b->set_batch_seq(next_batch_seq);
      b->set_first_seq(cursor + 1);  // seqs dropped from the buffer are covered too
      b->set_last_seq(last_seq);
      b->set_event_count(static_cast<uint32_t>(*count));
      b->set_codec(v1::CODEC_ZSTD);
      b->set_raw_bytes(payload.size());
      b->set_payload(std::move(*z));
      const size_t wire_bytes = b->payload().size();
      pace(wire_bytes);
      if (auto r = send_frame(f, steady_ns() + opt.ack_timeout_ns); !r) return r;
      in_flight.push_back({next_batch_seq++, last_seq, static_cast<uint32_t>(*count), steady_ns()});
      cursor = last_seq;
      last_sent_ns = steady_ns();
      set_status([&](ForwarderStatus& s) { s.bytes_sent += wire_bytes; });
    }
    if (!in_flight.empty() && steady_ns() - in_flight.front().sent_ns > opt.ack_timeout_ns) {
      return net_error("no ack for batch " + std::to_string(in_flight.front().batch_seq) +
                       " within the ack timeout");
    }
    if (steady_ns() - last_sent_ns > opt.ping_interval_ns) {
      v1::Frame ping;
      ping.mutable_ping()->set_nonce(static_cast<uint64_t>(steady_ns()));
      if (auto r = send_frame(ping, steady_ns() + opt.ack_timeout_ns); !r) return r;
      last_sent_ns = steady_ns();
    }
    // Wait briefly for acks (or for new events to send).
    const int64_t wait_ns = in_flight.size() < window ? 20'000'000 : 1'000'000'000;
    auto f = next_frame(steady_ns() + wait_ns);
    if (!f) return f.error();
    while (*f) {
      v1::Frame& frame = **f;
      if (frame.has_ack()) {
        const v1::Ack& a = frame.ack();
        if (a.status() == v1::Ack::REJECTED) {
          return net_error("the gateway rejected batch " + std::to_string(a.batch_seq()) + ": " +
                           a.reason());
        } else if (a.batch_seq() < ignore_below) {
          // an ack of a batch abandoned by a retry-later: it is sent again anyway
        } else if (in_flight.empty() || a.batch_seq() != in_flight.front().batch_seq) {
          return net_error("ack for batch " + std::to_string(a.batch_seq()) + " (" +
                           v1::Ack::Status_Name(a.status()) + ") out of order (expected " +
                           (in_flight.empty() ? std::string("none")
                                              : std::to_string(in_flight.front().batch_seq)) +
                           "); reconnecting");
        } else if (a.status() == v1::Ack::OK) {
          InFlight done = in_flight.front();
          in_flight.pop_front();
          committing.push_back(buffer.ack_async(done.last_seq));
          acked = done.last_seq;
          progress = true;
          set_status([&](ForwarderStatus& s) {
            ++s.batches_acked;
            s.events_acked += done.events;
            s.last_ack_ns = clock.now_ns();
            s.last_error.clear();
          });
        } else if (a.status() == v1::Ack::RETRY_LATER) {
          // Send everything unacknowledged again, after the pause the gateway asked for.
          cursor = acked;
          ignore_below = next_batch_seq;
          in_flight.clear();
          resume_ns = steady_ns() + std::max<int64_t>(a.retry_after_ms(), 100) * 1'000'000;
          log->info("uplink {}: gateway asks to retry later ({})", endpoint, a.reason());
        } else {
          return net_error("ack for batch " + std::to_string(a.batch_seq()) +
                           " has a status this agent does not know (" + std::to_string(a.status()) +
                           ")");
        }
      } else if (frame.has_ping()) {
        v1::Frame pong;
        pong.mutable_pong()->set_nonce(frame.ping().nonce());
        if (auto r = send_frame(pong, steady_ns() + opt.ack_timeout_ns); !r) return r;
      } else if (frame.has_goodbye()) {
        return net_error("the gateway ended the session: " + frame.goodbye().reason());
      }
      f = decoder.next();
      if (!f) return f.error();
    }
  }
  tls.close();
  (void)sock.send_all(tls.take_output(), steady_ns() + 1'000'000'000);
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

ForwarderStatus Forwarder::status() const {
  std::lock_guard lock(impl_->mu);
  return impl_->status;
}

}  // namespace outpost::agent
