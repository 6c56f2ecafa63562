// TlsContext and TlsSession over mbedTLS 2.28 (the only file that includes mbedTLS headers).
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include <cstring>

#include "common/tls/tls.hpp"

namespace outpost::tls {
namespace {

class TlsCategory : public std::error_category {
 public:
  const char* name() const noexcept override { return "outpost.tls"; }
  std::string message(int c) const override {
    switch (static_cast<tls_errc>(c)) {
      case tls_errc::config:
        return "TLS configuration error";
      case tls_errc::handshake:
        return "TLS handshake failed";
      case tls_errc::peer_verify:
        return "peer certificate not accepted";
      case tls_errc::protocol:
        return "TLS protocol error";
      case tls_errc::closed:
        return "TLS session closed by the peer";
    }
    return "unknown TLS error";
  }
};

std::string mbed_error(int ret) {
  char buf[160];
  mbedtls_strerror(ret, buf, sizeof buf);
  return std::string(buf) + " (-0x" + [&] {
    char hex[16];
    std::snprintf(hex, sizeof hex, "%04x", static_cast<unsigned>(-ret));
    return std::string(hex);
  }() + ")";
}

// ECDHE key exchange, AEAD only; ChaCha20-Poly1305 first (fast without AES instructions, as
// on many ARM devices), then AES-GCM. Must outlive every mbedtls_ssl_config that uses it.
const int kSuites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    0,
};

}  // namespace

const std::error_category& tls_category() {
  static const TlsCategory category;
  return category;
}

struct TlsContext::Impl {
  ContextOptions options;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_x509_crt ca;
  mbedtls_x509_crt cert;
  mbedtls_pk_context key;
  mbedtls_ssl_config conf;

  Impl() {
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_x509_crt_init(&ca);
    mbedtls_x509_crt_init(&cert);
    mbedtls_pk_init(&key);
    mbedtls_ssl_config_init(&conf);
  }
  ~Impl() {
    mbedtls_ssl_config_free(&conf);
    mbedtls_pk_free(&key);
    mbedtls_x509_crt_free(&cert);
    mbedtls_x509_crt_free(&ca);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
  }
};

TlsContext::TlsContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsContext::~TlsContext() = default;
const ContextOptions& TlsContext::options() const { return impl_->options; }

Result<std::shared_ptr<TlsContext>> TlsContext::create(const ContextOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  auto fail = [](const std::string& what, int ret) {
    return make_error(tls_errc::config, what + ": " + mbed_error(ret));
  };
  const char* personal = options.role == Role::server ? "outpost-gateway" : "outpost-agent";
  int ret = mbedtls_ctr_drbg_seed(&impl->drbg, mbedtls_entropy_func, &impl->entropy,
                                  reinterpret_cast<const unsigned char*>(personal),
                                  std::strlen(personal));
  if (ret != 0) return fail("seeding the random generator", ret);
  if ((ret = mbedtls_x509_crt_parse_file(&impl->ca, options.files.ca_file.c_str())) != 0) {
    return fail("CA file " + options.files.ca_file, ret);
  }
  // A client without a certificate exists only in tests (the gateway must refuse it).
  const bool own_cert = options.role == Role::server || !options.files.cert_file.empty();
  if (own_cert) {
    ret = mbedtls_x509_crt_parse_file(&impl->cert, options.files.cert_file.c_str());
    if (ret != 0) return fail("certificate file " + options.files.cert_file, ret);
    ret = mbedtls_pk_parse_keyfile(&impl->key, options.files.key_file.c_str(), nullptr);
    if (ret != 0) return fail("key file " + options.files.key_file, ret);
  }
  mbedtls_ssl_config& conf = impl->conf;
  ret = mbedtls_ssl_config_defaults(
      &conf, options.role == Role::server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
      MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
  if (ret != 0) return fail("TLS defaults", ret);
  mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &impl->drbg);
  mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_REQUIRED);
  mbedtls_ssl_conf_ca_chain(&conf, &impl->ca, nullptr);
  if (own_cert && (ret = mbedtls_ssl_conf_own_cert(&conf, &impl->cert, &impl->key)) != 0) {
    return fail("certificate and key " + options.files.cert_file, ret);
  }
  mbedtls_ssl_conf_min_version(&conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
  if (options.max_version_for_tests == "1.1") {
    mbedtls_ssl_conf_min_version(&conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_2);
    mbedtls_ssl_conf_max_version(&conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_2);
  } else {
    mbedtls_ssl_conf_max_version(&conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(&conf, kSuites);
  }
  mbedtls_ssl_conf_renegotiation(&conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
  if (options.role == Role::client && options.server_name.empty()) {
    return make_error(tls_errc::config,
                      "a TLS client needs the server name to verify (uplink.server_name)");
  }
  return std::shared_ptr<TlsContext>(new TlsContext(std::move(impl)));
}

struct TlsSession::Impl {
  std::shared_ptr<TlsContext> context;
  mbedtls_ssl_context ssl;
  std::string in;  // ciphertext not yet consumed by mbedTLS
  size_t in_pos = 0;
  std::string out;  // ciphertext waiting for the socket
  bool done = false;

  static int send_cb(void* self, const unsigned char* buf, size_t len) {
    static_cast<Impl*>(self)->out.append(reinterpret_cast<const char*>(buf), len);
    return static_cast<int>(len);
  }
  static int recv_cb(void* self, unsigned char* buf, size_t len) {
    auto* s = static_cast<Impl*>(self);
    size_t available = s->in.size() - s->in_pos;
    if (available == 0) return MBEDTLS_ERR_SSL_WANT_READ;
    size_t n = std::min(len, available);
    std::memcpy(buf, s->in.data() + s->in_pos, n);
    s->in_pos += n;
    if (s->in_pos == s->in.size()) {
      s->in.clear();
      s->in_pos = 0;
    }
    return static_cast<int>(n);
  }

  Error handshake_error(int ret) {
    uint32_t flags = mbedtls_ssl_get_verify_result(&ssl);
    if (flags != 0 && flags != static_cast<uint32_t>(-1)) {
      char info[512];
      mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
      std::string why(info);
      while (!why.empty() && why.back() == '\n') why.pop_back();
      for (char& c : why) c = c == '\n' ? ';' : c;
      return make_error(tls_errc::peer_verify, "peer certificate rejected: " + why);
    }
    if (ret == MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE || ret == MBEDTLS_ERR_SSL_PEER_VERIFY_FAILED) {
      return make_error(tls_errc::peer_verify,
                        "no acceptable peer certificate: " + mbed_error(ret));
    }
    return make_error(tls_errc::handshake, "TLS handshake failed: " + mbed_error(ret));
  }
};

TlsSession::TlsSession(std::shared_ptr<TlsContext> context) : impl_(std::make_unique<Impl>()) {
  impl_->context = std::move(context);
  mbedtls_ssl_init(&impl_->ssl);
  // Setup only fails on allocation; handshake() then reports it.
  if (mbedtls_ssl_setup(&impl_->ssl, &impl_->context->impl().conf) == 0 &&
      impl_->context->options().role == Role::client) {
    mbedtls_ssl_set_hostname(&impl_->ssl, impl_->context->options().server_name.c_str());
  }
  mbedtls_ssl_set_bio(&impl_->ssl, impl_.get(), Impl::send_cb, Impl::recv_cb, nullptr);
}

TlsSession::~TlsSession() { mbedtls_ssl_free(&impl_->ssl); }

void TlsSession::feed(std::string_view ciphertext) { impl_->in.append(ciphertext); }

std::string TlsSession::take_output() { return std::exchange(impl_->out, std::string()); }

bool TlsSession::has_output() const { return !impl_->out.empty(); }

bool TlsSession::handshake_done() const { return impl_->done; }

Result<bool> TlsSession::handshake() {
  if (impl_->done) return true;
  int ret = mbedtls_ssl_handshake(&impl_->ssl);
  if (ret == 0) {
    impl_->done = true;
    return true;
  }
  if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) return false;
  return impl_->handshake_error(ret);
}

Result<size_t> TlsSession::read(std::string& out, size_t max_bytes) {
  const size_t start = out.size();
  out.resize(start + max_bytes);
  int ret = mbedtls_ssl_read(&impl_->ssl, reinterpret_cast<unsigned char*>(out.data() + start),
                             max_bytes);
  if (ret > 0) {
    out.resize(start + static_cast<size_t>(ret));
    return static_cast<size_t>(ret);
  }
  out.resize(start);
  if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) return size_t{0};
  if (ret == 0 || ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
    return make_error(tls_errc::closed, "the peer closed the TLS session");
  }
  return make_error(tls_errc::protocol, "TLS read failed: " + mbed_error(ret));
}

Result<void> TlsSession::write(std::string_view plaintext) {
  size_t at = 0;
  while (at < plaintext.size()) {
    int ret = mbedtls_ssl_write(&impl_->ssl,
                                reinterpret_cast<const unsigned char*>(plaintext.data() + at),
                                plaintext.size() - at);
    if (ret > 0) {
      at += static_cast<size_t>(ret);
    } else if (ret != MBEDTLS_ERR_SSL_WANT_WRITE && ret != MBEDTLS_ERR_SSL_WANT_READ) {
      return make_error(tls_errc::protocol, "TLS write failed: " + mbed_error(ret));
    }
  }
  return {};
}

void TlsSession::close() { (void)mbedtls_ssl_close_notify(&impl_->ssl); }

PeerCertificate TlsSession::peer() const {
  PeerCertificate p;
  const mbedtls_x509_crt* crt = mbedtls_ssl_get_peer_cert(&impl_->ssl);
  if (crt == nullptr) return p;
  char buf[512];
  if (mbedtls_x509_dn_gets(buf, sizeof buf, &crt->subject) > 0) p.subject = buf;
  for (const mbedtls_x509_name* n = &crt->subject; n != nullptr; n = n->next) {
    if (n->oid.p != nullptr && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0) {
      p.common_name.assign(reinterpret_cast<const char*>(n->val.p), n->val.len);
    }
  }
  constexpr int kUriTag = MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6;  // uniformResourceIdentifier
  for (const mbedtls_x509_sequence* s = &crt->subject_alt_names; s != nullptr; s = s->next) {
    if (s->buf.p != nullptr && s->buf.tag == kUriTag) {
      p.uri_sans.emplace_back(reinterpret_cast<const char*>(s->buf.p), s->buf.len);
    }
  }
  if (mbedtls_x509_serial_gets(buf, sizeof buf, &crt->serial) > 0) p.serial = buf;
  return p;
}

std::string TlsSession::cipher_suite() const {
  const char* s = mbedtls_ssl_get_ciphersuite(&impl_->ssl);
  return s != nullptr ? s : "";
}

std::string TlsSession::version() const {
  const char* v = mbedtls_ssl_get_version(&impl_->ssl);
  return v != nullptr ? v : "";
}

}  // namespace outpost::tls
