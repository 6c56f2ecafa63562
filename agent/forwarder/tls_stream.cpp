#include "agent/forwarder/tls_stream.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "uplink/frame.hpp"

namespace outpost::agent {
namespace {

Error net_error(const std::string& what) {
  return make_error(std::make_error_code(std::errc::io_error), what);
}

// A non-blocking TCP socket; every wait ends at a deadline of the Clock's monotonic time.
class Socket {
 public:
  explicit Socket(const Clock& clock) : clock_(clock) {}
  ~Socket() { close(); }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  Result<void> connect(const std::string& host, const std::string& port, int64_t deadline) {
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
      int ready = ::poll(&p, 1, poll_ms(deadline));
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

  Result<void> send_all(std::string_view data, int64_t deadline) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) {
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        return net_error(std::string("send: ") + std::strerror(errno));
      }
      auto ready = wait(POLLOUT, deadline);
      if (!ready) return ready.error();
      if (!*ready) return net_error("send timed out");
    }
    return {};
  }

  // Reads what is there, waiting until the deadline; "" when the deadline passed.
  Result<std::string> receive(int64_t deadline) {
    char buf[64 * 1024];
    while (true) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n > 0) return std::string(buf, static_cast<size_t>(n));
      if (n == 0) return net_error("the gateway closed the connection");
      if (errno != EAGAIN && errno != EINTR) {
        return net_error(std::string("recv: ") + std::strerror(errno));
      }
      auto ready = wait(POLLIN, deadline);
      if (!ready) return ready.error();
      if (!*ready) return std::string();
    }
  }

 private:
  int poll_ms(int64_t deadline) const {
    const int64_t left = deadline - clock_.mono_ns();
    return left <= 0 ? 0 : static_cast<int>(std::max<int64_t>(1, left / 1'000'000));
  }
  // True when ready, false when the deadline passed.
  Result<bool> wait(short events, int64_t deadline) {
    if (deadline <= clock_.mono_ns()) return false;
    pollfd p{fd_, events, 0};
    int rc = ::poll(&p, 1, poll_ms(deadline));
    if (rc < 0 && errno != EINTR) return net_error(std::string("poll: ") + std::strerror(errno));
    return rc > 0;
  }

  const Clock& clock_;
  int fd_ = -1;
};

}  // namespace

struct TlsFrameStream::Impl {
  Impl(std::shared_ptr<tls::TlsContext> context, const Clock& c)
      : clock(c), sock(c), tls(std::move(context)) {}
  const Clock& clock;
  Socket sock;
  tls::TlsSession tls;
  wire::FrameDecoder decoder{64u << 20};
  std::string plain;
};

TlsFrameStream::TlsFrameStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsFrameStream::~TlsFrameStream() = default;

Result<std::unique_ptr<TlsFrameStream>> TlsFrameStream::connect(
    const std::string& host, const std::string& port, std::shared_ptr<tls::TlsContext> context,
    const Clock& clock, int64_t deadline) {
  auto impl = std::make_unique<Impl>(std::move(context), clock);
  if (auto r = impl->sock.connect(host, port, deadline); !r) return r.error();
  while (true) {
    auto done = impl->tls.handshake();
    if (impl->tls.has_output()) {
      if (auto r = impl->sock.send_all(impl->tls.take_output(), deadline); !r) return r.error();
    }
    if (!done) return done.error();
    if (*done) break;
    auto in = impl->sock.receive(deadline);
    if (!in) return in.error();
    if (in->empty()) return net_error("TLS handshake timed out");
    impl->tls.feed(*in);
  }
  return std::make_unique<TlsFrameStream>(std::move(impl));
}

Result<void> TlsFrameStream::send(const v1::Frame& frame, int64_t deadline) {
  if (auto r = impl_->tls.write(wire::encode_frame(frame)); !r) return r;
  return impl_->sock.send_all(impl_->tls.take_output(), deadline);
}

Result<std::optional<v1::Frame>> TlsFrameStream::receive(int64_t deadline) {
  Impl& m = *impl_;
  while (true) {
    auto f = m.decoder.next();
    if (!f || *f) return f;
    auto in = m.sock.receive(deadline);
    if (!in) return in.error();
    if (in->empty()) return std::optional<v1::Frame>();
    m.tls.feed(*in);
    Result<size_t> n = size_t{0};
    while ((n = m.tls.read(m.plain, 64 * 1024)) && *n > 0) {
    }
    m.decoder.feed(m.plain);  // a Goodbye just before the close_notify still counts
    m.plain.clear();
    if (!n) {
      auto last = m.decoder.next();
      if (last && *last) return last;
      return n.error();
    }
    if (m.tls.has_output()) {
      if (auto r = m.sock.send_all(m.tls.take_output(), deadline); !r) return r.error();
    }
  }
}

void TlsFrameStream::close(int64_t deadline) {
  impl_->tls.close();
  (void)impl_->sock.send_all(impl_->tls.take_output(), deadline);
}

void TlsFrameStream::set_max_frame_bytes(size_t n) { impl_->decoder.set_max_frame_bytes(n); }
std::string TlsFrameStream::tls_version() const { return impl_->tls.version(); }
std::string TlsFrameStream::cipher_suite() const { return impl_->tls.cipher_suite(); }

}  // namespace outpost::agent
