// TlsContext and TlsSession over mbedTLS 2.28 (the only file that includes mbedTLS headers).
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crl.h>
#include <mbedtls/x509_crt.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include <cstring>

#include "common/error_category.hpp"
#include "common/tls/certificate.hpp"
#include "common/tls/tls.hpp"
#include "common/units.hpp"

namespace outpost::tls {

// certificate.cpp: an X.509 time as Unix time.
int64_t unix_time(const mbedtls_x509_time& t);

namespace {

// What this machine's clock says: what mbedTLS judged the certificates' validity by.
int64_t wall_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const char* describe(tls_errc e) {
  switch (e) {
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
  return nullptr;
}

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
  static const EnumCategory<tls_errc> category("outpost.tls", describe);
  return category;
}

struct TlsContext::Impl {
  ContextOptions options;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_x509_crt ca;
  mbedtls_x509_crl crl;
  bool has_crl = false;
  mbedtls_x509_crt cert;
  mbedtls_pk_context key;
  mbedtls_ssl_config conf;

  Impl() {
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_x509_crt_init(&ca);
    mbedtls_x509_crl_init(&crl);
    mbedtls_x509_crt_init(&cert);
    mbedtls_pk_init(&key);
    mbedtls_ssl_config_init(&conf);
  }
  ~Impl() {
    mbedtls_ssl_config_free(&conf);
    mbedtls_pk_free(&key);
    mbedtls_x509_crt_free(&cert);
    mbedtls_x509_crl_free(&crl);
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
  // A missing or unreadable file is named as such, not as mbedTLS's "Read/write of file failed".
  for (const auto& [what, path] : {std::pair{"CA file", &options.files.ca_file},
                                   std::pair{"certificate file", &options.files.cert_file},
                                   std::pair{"key file", &options.files.key_file},
                                   std::pair{"CRL file", &options.files.crl_file}}) {
    if (path->empty() || ::access(path->c_str(), R_OK) == 0) continue;
    return make_error(tls_errc::config,
                      std::string(what) + " " + *path + " cannot be read: " + std::strerror(errno));
  }
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
    // mbedTLS would take a key of another certificate and fail every handshake: a key file
    // renewed before its certificate (or a copy mixed up) is refused here instead.
    if ((ret = mbedtls_pk_check_pair(&impl->cert.pk, &impl->key)) != 0) {
      return make_error(tls_errc::config, "key file " + options.files.key_file +
                                              " is not the key of certificate file " +
                                              options.files.cert_file + ": " + mbed_error(ret));
    }
  }
  if (!options.files.crl_file.empty()) {
    ret = mbedtls_x509_crl_parse_file(&impl->crl, options.files.crl_file.c_str());
    if (ret != 0) return fail("CRL file " + options.files.crl_file + " (PEM)", ret);
    impl->has_crl = true;
    // A CRL of another CA would revoke nothing and is surely a mistake.
    char issuer[512], subject[512];
    if (mbedtls_x509_dn_gets(issuer, sizeof issuer, &impl->crl.issuer) < 0 ||
        mbedtls_x509_dn_gets(subject, sizeof subject, &impl->ca.subject) < 0 ||
        std::strcmp(issuer, subject) != 0) {
      return make_error(tls_errc::config, "CRL file " + options.files.crl_file +
                                              " is not issued by the CA of " +
                                              options.files.ca_file);
    }
  }
  mbedtls_ssl_config& conf = impl->conf;
  ret = mbedtls_ssl_config_defaults(
      &conf, options.role == Role::server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
      MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
  if (ret != 0) return fail("TLS defaults", ret);
  mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &impl->drbg);
  mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_REQUIRED);
  mbedtls_ssl_conf_ca_chain(&conf, &impl->ca, impl->has_crl ? &impl->crl : nullptr);
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
  // The peer's leaf certificate as the verification saw it: after a failed verification
  // mbedTLS keeps no peer certificate, and the audit log must still say whose it was.
  std::string leaf_subject, leaf_serial;
  // The first bytes the peer sent (its ClientHello), to tell why a handshake failed.
  std::string hello;

  static int verify_cb(void* self, mbedtls_x509_crt* crt, int depth, uint32_t* flags) {
    (void)flags;  // the verdict stays mbedTLS's
    if (depth != 0) return 0;
    auto* s = static_cast<Impl*>(self);
    char buf[512];
    if (mbedtls_x509_dn_gets(buf, sizeof buf, &crt->subject) > 0) s->leaf_subject = buf;
    if (mbedtls_x509_serial_gets(buf, sizeof buf, &crt->serial) > 0) s->leaf_serial = buf;
    return 0;
  }

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
    Error e = classify(ret);
    // A fatal alert tells the peer why, where mbedTLS closed without one (a client without a
    // certificate got a bare TCP close).
    if (out.empty()) {
      const unsigned char alert = e.message.find("protocol version") != std::string::npos
                                      ? MBEDTLS_SSL_ALERT_MSG_PROTOCOL_VERSION
                                  : e.code == tls_errc::peer_verify
                                      ? MBEDTLS_SSL_ALERT_MSG_BAD_CERT
                                      : MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE;
      (void)mbedtls_ssl_send_alert_message(&ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL, alert);
    }
    return e;
  }

  Error classify(int ret) {
    if (offers_only_tls13()) {
      return make_error(tls_errc::handshake,
                        "TLS handshake failed: protocol version: the peer offers only TLS 1.3; "
                        "this endpoint speaks TLS 1.2");
    }
    uint32_t flags = mbedtls_ssl_get_verify_result(&ssl);
    if (flags != 0 && flags != static_cast<uint32_t>(-1)) {
      char info[512];
      mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
      std::string why(info);
      while (!why.empty() && why.back() == '\n') why.pop_back();
      for (char& c : why) c = c == '\n' ? ';' : c;
      if (flags & (MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE |
                   MBEDTLS_X509_BADCRL_EXPIRED | MBEDTLS_X509_BADCRL_FUTURE)) {
        // Validity is judged by this machine's clock, which on a device can be wrong (a dead
        // RTC battery says 1970): say so, with the time it believes.
        why += (flags & (MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCRL_EXPIRED))
                   ? " (expired according to the local clock"
                   : " (not yet valid according to the local clock";
        why += ", which says " + format_time_ns(wall_now_ns()) +
               "; if that is wrong, set the clock, e.g. with NTP)";
      }
      return make_error(tls_errc::peer_verify, "peer certificate rejected: " + why);
    }
    if (ret == MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE || ret == MBEDTLS_ERR_SSL_PEER_VERIFY_FAILED) {
      return make_error(tls_errc::peer_verify,
                        "no acceptable peer certificate: " + mbed_error(ret));
    }
    return make_error(tls_errc::handshake, "TLS handshake failed: " + mbed_error(ret));
  }

  // Whether the saved ClientHello's supported_versions extension lists TLS 1.3 and not 1.2.
  bool offers_only_tls13() const {
    const auto* p = reinterpret_cast<const unsigned char*>(hello.data());
    const size_t n = hello.size();
    // record (5) + handshake header (4) + version (2) + random (32)
    size_t at = 5 + 4 + 2 + 32;
    if (n < at + 1 || p[0] != 0x16 || p[5] != 0x01) return false;
    auto skip = [&](size_t len_bytes) {
      if (at + len_bytes > n) return false;
      size_t len = 0;
      for (size_t i = 0; i < len_bytes; ++i) len = len << 8 | p[at + i];
      at += len_bytes + len;
      return at <= n;
    };
    if (!skip(1) || !skip(2) || !skip(1)) return false;  // session id, suites, compression
    if (at + 2 > n) return false;
    const size_t end = std::min(n, at + 2 + (static_cast<size_t>(p[at]) << 8 | p[at + 1]));
    at += 2;
    while (at + 4 <= end) {
      const unsigned type = static_cast<unsigned>(p[at]) << 8 | p[at + 1];
      const size_t len = static_cast<size_t>(p[at + 2]) << 8 | p[at + 3];
      at += 4;
      if (type == 0x002b && len >= 1 && at + len <= end) {
        bool has12 = false, has13 = false;
        for (size_t i = at + 1; i + 1 < at + len && i + 1 < at + 1 + p[at]; i += 2) {
          has12 = has12 || (p[i] == 3 && p[i + 1] == 3);
          has13 = has13 || (p[i] == 3 && p[i + 1] == 4);
        }
        return has13 && !has12;
      }
      at += len;
    }
    return false;
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
  mbedtls_ssl_set_verify(&impl_->ssl, Impl::verify_cb, impl_.get());
}

TlsSession::~TlsSession() { mbedtls_ssl_free(&impl_->ssl); }

void TlsSession::feed(std::string_view ciphertext) {
  if (!impl_->done && impl_->hello.size() < 4096) {
    impl_->hello.append(ciphertext.substr(0, 4096 - impl_->hello.size()));
  }
  impl_->in.append(ciphertext);
}

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

// Also used by certificate.cpp (read_certificate).
PeerCertificate describe_certificate(const mbedtls_x509_crt* crt);
PeerCertificate describe_certificate(const mbedtls_x509_crt* crt) {
  PeerCertificate p;
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
  p.der.assign(reinterpret_cast<const char*>(crt->raw.p), crt->raw.len);
  return p;
}

PeerCertificate TlsSession::peer() const {
  const mbedtls_x509_crt* crt = mbedtls_ssl_get_peer_cert(&impl_->ssl);
  if (crt == nullptr) {  // a failed verification keeps none: what the verification saw
    PeerCertificate p;
    p.subject = impl_->leaf_subject;
    p.serial = impl_->leaf_serial;
    return p;
  }
  return describe_certificate(crt);
}

Result<PeerCertificate> TlsContext::verify_certificate(std::string_view der) const {
  mbedtls_x509_crt crt;
  mbedtls_x509_crt_init(&crt);
  struct Free {
    mbedtls_x509_crt* c;
    ~Free() { mbedtls_x509_crt_free(c); }
  } free_crt{&crt};
  if (der.empty() ||
      mbedtls_x509_crt_parse_der(&crt, reinterpret_cast<const unsigned char*>(der.data()),
                                 der.size()) != 0) {
    return make_error(tls_errc::peer_verify, "not a certificate (DER)");
  }
  uint32_t flags = 0;
  const int ret = mbedtls_x509_crt_verify(&crt, &impl_->ca, impl_->has_crl ? &impl_->crl : nullptr,
                                          nullptr, &flags, nullptr, nullptr);
  if (ret == 0 &&
      mbedtls_x509_crt_check_extended_key_usage(&crt, MBEDTLS_OID_CLIENT_AUTH,
                                                MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)) != 0) {
    return make_error(tls_errc::peer_verify, "not a client certificate (extendedKeyUsage)");
  }
  if (ret != 0) {
    char info[512];
    mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
    std::string why(info);
    while (!why.empty() && why.back() == '\n') why.pop_back();
    for (char& c : why) c = c == '\n' ? ';' : c;
    return make_error(tls_errc::peer_verify, why.empty() ? "verification failed" : why);
  }
  return describe_certificate(&crt);
}

bool TlsContext::revoked(std::string_view der) const {
  if (!impl_->has_crl) return false;
  mbedtls_x509_crt crt;
  mbedtls_x509_crt_init(&crt);
  const bool parsed =
      mbedtls_x509_crt_parse_der(&crt, reinterpret_cast<const unsigned char*>(der.data()),
                                 der.size()) == 0;
  const bool out = parsed && mbedtls_x509_crt_is_revoked(&crt, &impl_->crl) != 0;
  mbedtls_x509_crt_free(&crt);
  return out;
}

bool TlsContext::has_crl() const { return impl_->has_crl; }

std::string TlsContext::serial() const {
  if (impl_->cert.raw.p == nullptr) return "";
  char buf[128];
  return mbedtls_x509_serial_gets(buf, sizeof buf, &impl_->cert.serial) > 0 ? buf : "";
}

int64_t TlsContext::not_after() const {
  return impl_->cert.raw.p == nullptr ? 0 : unix_time(impl_->cert.valid_to);
}

size_t TlsContext::crl_entries() const {
  size_t n = 0;
  if (!impl_->has_crl) return 0;
  for (const mbedtls_x509_crl* c = &impl_->crl; c != nullptr; c = c->next) {
    for (const mbedtls_x509_crl_entry* e = &c->entry; e != nullptr; e = e->next) {
      n += e->serial.len > 0;
    }
  }
  return n;
}

int64_t TlsContext::crl_next_update() const {
  return impl_->has_crl ? unix_time(impl_->crl.next_update) : 0;
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
