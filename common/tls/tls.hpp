#pragma once
// Mutual TLS for the uplink, over mbedTLS 2.28, as a memory-buffer engine: the owner moves
// ciphertext between the engine and its socket (Asio on the gateway, a blocking socket on
// the agent), so one implementation serves both and tests run it over an in-memory stream.
//
// Policy (docs/protocol.md, "TLS"): TLS 1.2 only as the minimum (and maximum: mbedTLS 2.28's
// TLS 1.3 is experimental), ECDHE with AEAD suites only (ChaCha20-Poly1305, AES-GCM), the
// server requires a client certificate signed by its CA, the client verifies the server's
// chain and host name.
//
// Thread-safety: a TlsContext is immutable after creation and shared by every session (its
// random generator locks internally). A TlsSession belongs to one connection and one thread
// at a time. A TlsSession keeps its TlsContext alive, so a context replaced when its files
// change (common/tls/context_source.hpp) lives on for the sessions that use it.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "common/result.hpp"

namespace outpost::tls {

enum class tls_errc {
  config = 1,   // a certificate, key or CA file that cannot be used
  handshake,    // the handshake failed (protocol version, suites, a bad message)
  peer_verify,  // the peer's certificate is missing, expired, from another CA, wrong name
  protocol,     // a TLS error after the handshake (bad record, MAC failure)
  closed,       // the peer closed the session (close_notify) or the stream ended
};
const std::error_category& tls_category();
inline std::error_code make_error_code(tls_errc e) { return {static_cast<int>(e), tls_category()}; }

struct Files {
  std::string ca_file;    // PEM: the CA that signs the peer's certificate
  std::string cert_file;  // PEM: our certificate (chain); a client without one: tests only
  std::string key_file;   // PEM: its private key
  std::string crl_file;   // PEM: the CA's revocation list; "" for none (the gateway's tls.crl)
};

enum class Role { client, server };

struct ContextOptions {
  Role role = Role::client;
  Files files;
  // Client: the name the server's certificate must carry (DNS or IP SAN, or CN).
  std::string server_name;
  // Tests only: the highest protocol version to offer ("1.1" makes a client the gateway must
  // refuse). Empty: TLS 1.2.
  std::string max_version_for_tests;
};

class TlsContext {
 public:
  static Result<std::shared_ptr<TlsContext>> create(const ContextOptions& options);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  const ContextOptions& options() const;

  // Checks a certificate someone else received (DER: a device's, that a relay presents) against
  // this context's CA, as a handshake would for a client certificate (chain, validity dates by
  // the local clock, extended key usage clientAuth when present), and says what it names.
  // tls_errc::peer_verify with the reason when it does not pass.
  Result<struct PeerCertificate> verify_certificate(std::string_view der) const;

  // Whether this context's CRL lists the certificate (DER) as revoked; false without a CRL.
  bool revoked(std::string_view der) const;
  bool has_crl() const;

  // For logs and /metrics: our certificate's serial (hex) and notAfter (Unix time; 0 without
  // a certificate), and the CRL's entries and next update (Unix time; 0 without a CRL).
  std::string serial() const;
  int64_t not_after() const;
  size_t crl_entries() const;
  int64_t crl_next_update() const;

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  explicit TlsContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// What the peer's verified certificate says.
struct PeerCertificate {
  std::string subject;                // e.g. "CN=device-1"
  std::string common_name;            // the CN ("" if none)
  std::vector<std::string> uri_sans;  // URI subjectAltNames
  std::string serial;                 // hex
  std::string der;                    // the certificate itself (DER)
};

class TlsSession {
 public:
  explicit TlsSession(std::shared_ptr<TlsContext> context);
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // Ciphertext received from the peer.
  void feed(std::string_view ciphertext);
  // Ciphertext to send to the peer: everything produced so far (the caller sends it all).
  std::string take_output();
  bool has_output() const;

  // Advances the handshake with what was fed: true when it is complete, false when it needs
  // more input (send take_output() first), or an error (send take_output(), then close).
  Result<bool> handshake();
  bool handshake_done() const;

  // Decrypts into `out` (appends); returns how many plaintext bytes were added (0: needs
  // more input). tls_errc::closed when the peer closed the session.
  Result<size_t> read(std::string& out, size_t max_bytes);
  // Encrypts `plaintext` into the output.
  Result<void> write(std::string_view plaintext);
  // Queues a close_notify alert.
  void close();

  // After the handshake: the peer's certificate (the server requires one; for a client,
  // the server's), the suite and the version, for logs.
  PeerCertificate peer() const;
  std::string cipher_suite() const;
  std::string version() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::tls

template <>
struct std::is_error_code_enum<outpost::tls::tls_errc> : std::true_type {};
