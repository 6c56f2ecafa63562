// The TLS adapter over an in-memory stream, with real certificates from
// deploy/certs/make-certs: mutual authentication, identity from the certificate, and each
// refusal the gateway relies on (no client certificate, another CA, expired, wrong server
// name, TLS 1.1, garbage).
#include "common/tls/tls.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/tls/certificate.hpp"
#include "common/tls/context_source.hpp"
#include "tests/support/temp_dir.hpp"

using namespace outpost;
using namespace outpost::tls;

namespace {

// One PKI per test binary run: two CAs, so that "another CA" is a real other CA.
struct Pki {
  test::TempDir dir;
  std::string main, other;
  Pki() {
    main = dir.file("main");
    other = dir.file("other");
    std::string script = std::string(OUTPOST_SOURCE_DIR) + "/deploy/certs/make-certs";
    std::string cmd = script + " " + main +
                      " --devices 2 --expired-device device-old >/dev/null && " + script + " " +
                      other + " --devices 1 --ca-name 'Some other CA' >/dev/null";
    REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "make-certs failed: is openssl installed?");
  }
  Files gateway() const {
    return {main + "/ca.crt", main + "/gateway.crt", main + "/gateway.key", ""};
  }
  Files device(const std::string& name, const std::string& pki = "") const {
    const std::string& d = pki.empty() ? main : pki;
    return {main + "/ca.crt", d + "/" + name + ".crt", d + "/" + name + ".key", ""};
  }
};

const Pki& pki() {
  static Pki p;
  return p;
}

std::shared_ptr<TlsContext> context(ContextOptions o) {
  auto c = TlsContext::create(o);
  REQUIRE_MESSAGE(c, (c ? "" : c.error().message));
  return *c;
}

std::shared_ptr<TlsContext> server_context() {
  return context({Role::server, pki().gateway(), "", ""});
}

struct Outcome {
  Result<bool> client = false;
  Result<bool> server = false;
};

// Moves bytes between the two sessions until both finish the handshake or one fails.
Outcome pump(TlsSession& client, TlsSession& server) {
  Outcome o;
  for (int i = 0; i < 50; ++i) {
    o.client = client.handshake();
    server.feed(client.take_output());
    o.server = server.handshake();
    client.feed(server.take_output());
    if (!o.client || !o.server || (*o.client && *o.server)) break;
  }
  if (o.server && *o.server) o.client = client.handshake();  // consume the server's last flight
  return o;
}

std::string read_all(TlsSession& s) {
  std::string out;
  while (true) {
    auto n = s.read(out, 16384);
    REQUIRE(n);
    if (*n == 0) return out;
  }
}

}  // namespace

TEST_CASE("mutual TLS: both sides verify, data flows, identity is the certificate's CN") {
  auto server_ctx = server_context();
  auto client_ctx = context({Role::client, pki().device("device-1"), "localhost", ""});
  TlsSession client(client_ctx), server(server_ctx);
  auto o = pump(client, server);
  REQUIRE_MESSAGE(o.server, (o.server ? "" : o.server.error().message));
  REQUIRE_MESSAGE(o.client, (o.client ? "" : o.client.error().message));
  CHECK(*o.server);
  CHECK(*o.client);
  CHECK(server.peer().common_name == "device-1");
  CHECK(server.peer().subject == "CN=device-1");
  CHECK_FALSE(server.peer().serial.empty());
  CHECK(client.peer().common_name == "outpost-gateway");
  CHECK(server.version() == "TLSv1.2");
  CHECK(server.cipher_suite().find("CHACHA20-POLY1305") != std::string::npos);

  std::string big(100'000, 'x');
  REQUIRE(client.write(big));
  server.feed(client.take_output());
  CHECK(read_all(server) == big);
  REQUIRE(server.write("ack"));
  client.feed(server.take_output());
  CHECK(read_all(client) == "ack");

  client.close();
  server.feed(client.take_output());
  std::string ignored;
  auto closed = server.read(ignored, 100);
  REQUIRE_FALSE(closed);
  CHECK(closed.error().code == tls_errc::closed);
}

TEST_CASE("the server refuses a client without a certificate") {
  auto server_ctx = server_context();
  auto client_ctx = context({Role::client, {pki().main + "/ca.crt", "", "", ""}, "localhost", ""});
  TlsSession client(client_ctx), server(server_ctx);
  auto o = pump(client, server);
  REQUIRE_FALSE(o.server);
  CHECK(o.server.error().code == tls_errc::peer_verify);
  CHECK(o.server.error().message.find("missing") != std::string::npos);
}

TEST_CASE("the server refuses a client certificate signed by another CA") {
  auto server_ctx = server_context();
  auto client_ctx = context(
      {Role::client,
       {pki().main + "/ca.crt", pki().other + "/device-1.crt", pki().other + "/device-1.key", ""},
       "localhost",
       ""});
  TlsSession client(client_ctx), server(server_ctx);
  auto o = pump(client, server);
  REQUIRE_FALSE(o.server);
  CHECK(o.server.error().code == tls_errc::peer_verify);
  CHECK(o.server.error().message.find("not correctly signed by the trusted CA") !=
        std::string::npos);
}

TEST_CASE("the server refuses an expired client certificate and says so") {
  auto server_ctx = server_context();
  auto client_ctx = context({Role::client, pki().device("device-old"), "localhost", ""});
  TlsSession client(client_ctx), server(server_ctx);
  auto o = pump(client, server);
  REQUIRE_FALSE(o.server);
  CHECK(o.server.error().code == tls_errc::peer_verify);
  CHECK(o.server.error().message.find("expired") != std::string::npos);
}

TEST_CASE("the client refuses a server whose name does not match") {
  auto server_ctx = server_context();
  auto client_ctx = context({Role::client, pki().device("device-1"), "gateway.example.com", ""});
  TlsSession client(client_ctx), server(server_ctx);
  auto o = pump(client, server);
  REQUIRE_FALSE(o.client);
  CHECK(o.client.error().code == tls_errc::peer_verify);
  CHECK(o.client.error().message.find("CN") != std::string::npos);
}

TEST_CASE("the client refuses a server certificate from another CA") {
  auto server_ctx = context(
      {Role::server,
       {pki().main + "/ca.crt", pki().other + "/gateway.crt", pki().other + "/gateway.key", ""},
       "",
       ""});
  auto client_ctx = context({Role::client, pki().device("device-1"), "localhost", ""});
  TlsSession client(client_ctx), server(server_ctx);
  auto o = pump(client, server);
  REQUIRE_FALSE(o.client);
  CHECK(o.client.error().code == tls_errc::peer_verify);
}

TEST_CASE("the server refuses a client that offers only TLS 1.1") {
  auto server_ctx = server_context();
  auto client_ctx = context({Role::client, pki().device("device-1"), "localhost", "1.1"});
  TlsSession client(client_ctx), server(server_ctx);
  auto o = pump(client, server);
  REQUIRE_FALSE(o.server);
  CHECK(o.server.error().code == tls_errc::handshake);
}

TEST_CASE("garbage instead of a ClientHello is a handshake error, not a crash") {
  auto server_ctx = server_context();
  TlsSession server(server_ctx);
  server.feed("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  auto r = server.handshake();
  REQUIRE_FALSE(r);
  CHECK(r.error().code == tls_errc::handshake);
}

TEST_CASE("unusable files are a config error naming the file") {
  auto r = TlsContext::create({Role::server, {"/nonexistent/ca.crt", "a", "b", ""}, "", ""});
  REQUIRE_FALSE(r);
  CHECK(r.error().code == tls_errc::config);
  CHECK(r.error().message.find("/nonexistent/ca.crt") != std::string::npos);
  auto no_name = TlsContext::create({Role::client, pki().device("device-1"), "", ""});
  REQUIRE_FALSE(no_name);
  CHECK(no_name.error().message.find("server name") != std::string::npos);
}

// --- Rotation and revocation (docs/install.md, "Rotating and revoking certificates") ---

namespace {

std::string make_certs(const std::string& args) {
  return std::string(OUTPOST_SOURCE_DIR) + "/deploy/certs/make-certs " + args + " >/dev/null";
}

// A PKI of its own, for tests that revoke and renew.
struct OwnPki {
  test::TempDir dir;
  std::string at = dir.file("pki");
  explicit OwnPki(const std::string& more = "") {
    REQUIRE(std::system(make_certs(at + " --devices 2 " + more).c_str()) == 0);
  }
  void run(const std::string& args) const {
    REQUIRE(std::system(make_certs(at + " " + args).c_str()) == 0);
  }
  Files gateway(bool crl) const {
    return {at + "/ca.crt", at + "/gateway.crt", at + "/gateway.key", crl ? at + "/crl.pem" : ""};
  }
  Files device(const std::string& name) const {
    return {at + "/ca.crt", at + "/" + name + ".crt", at + "/" + name + ".key", ""};
  }
  std::string der(const std::string& name) const {
    auto c = read_certificate(at + "/" + name + ".crt");
    REQUIRE(c);
    return c->der;
  }
};

}  // namespace

TEST_CASE("a key that is not the certificate's is refused, naming both files") {
  Files f = pki().device("device-1");
  f.key_file = pki().main + "/device-2.key";
  auto r = TlsContext::create({Role::client, f, "localhost", ""});
  REQUIRE_FALSE(r);
  CHECK(r.error().code == tls_errc::config);
  CHECK(r.error().message.find("is not the key of certificate file") != std::string::npos);
  CHECK(r.error().message.find("device-1.crt") != std::string::npos);
}

TEST_CASE("a revoked client is refused at the handshake, its serial known for the audit") {
  OwnPki own;
  own.run("--revoke device-2");
  auto server_ctx = context({Role::server, own.gateway(true), "", ""});
  CHECK(server_ctx->has_crl());
  CHECK(server_ctx->crl_entries() == 1);
  CHECK(server_ctx->crl_next_update() > std::time(nullptr) + 29 * 86400);
  auto revoked = read_certificate(own.at + "/device-2.crt");
  REQUIRE(revoked);
  {
    auto client_ctx = context({Role::client, own.device("device-2"), "localhost", ""});
    TlsSession client(client_ctx), server(server_ctx);
    auto o = pump(client, server);
    REQUIRE_FALSE(o.server);
    CHECK(o.server.error().code == tls_errc::peer_verify);
    CHECK(o.server.error().message.find("revoked") != std::string::npos);
    CHECK(server.peer().serial == revoked->serial);
  }
  {
    auto client_ctx = context({Role::client, own.device("device-1"), "localhost", ""});
    TlsSession client(client_ctx), server(server_ctx);
    auto o = pump(client, server);
    REQUIRE(o.server);
    CHECK(*o.server);
  }
  CHECK(server_ctx->revoked(own.der("device-2")));
  CHECK_FALSE(server_ctx->revoked(own.der("device-1")));
  CHECK_FALSE(server_ctx->verify_certificate(own.der("device-2")));  // a relay cannot vouch
  CHECK(server_ctx->verify_certificate(own.der("device-1")));
  // Without the CRL nothing is revoked.
  auto plain = context({Role::server, own.gateway(false), "", ""});
  CHECK_FALSE(plain->has_crl());
  CHECK_FALSE(plain->revoked(own.der("device-2")));
}

TEST_CASE("a CRL of another CA is refused") {
  OwnPki own("--ca-name 'Another CA'");
  own.run("--crl");
  Files f = pki().gateway();
  f.crl_file = own.at + "/crl.pem";
  auto r = TlsContext::create({Role::server, f, "", ""});
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("is not issued by the CA") != std::string::npos);
  f.crl_file = own.at + "/ca.crt";  // not a CRL
  auto not_crl = TlsContext::create({Role::server, f, "", ""});
  REQUIRE_FALSE(not_crl);
  CHECK(not_crl.error().message.find("CRL file") != std::string::npos);
}

TEST_CASE("a context source follows renewed files and keeps the old pair when the new one is bad") {
  OwnPki own;
  auto source = ContextSource::create({Role::client, own.device("device-1"), "localhost", ""});
  REQUIRE(source);
  ContextSource& s = **source;
  const auto first = s.current();
  const std::string first_serial = first->serial();
  CHECK_FALSE(first_serial.empty());
  CHECK_FALSE(s.refresh().changed);  // nothing changed: nothing read
  CHECK(s.current() == first);

  own.run("--renew device-1");
  auto renewed = s.refresh();
  CHECK(renewed.changed);
  CHECK_FALSE(renewed.refused);
  CHECK(s.current() != first);
  CHECK(s.current()->serial() != first_serial);
  CHECK(first->serial() == first_serial);  // a session holding the old one still has it

  // A key that does not match (written before its certificate, or a mix-up): refused, the
  // pair in use stays; once both match again, they are taken.
  const std::string key = own.at + "/device-1.key";
  std::string good;
  {
    std::ifstream in(key);
    good.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::filesystem::copy_file(own.at + "/device-2.key", key,
                             std::filesystem::copy_options::overwrite_existing);
  const auto in_use = s.current();
  auto bad = s.refresh();
  CHECK(bad.changed);
  REQUIRE(bad.refused);
  CHECK(bad.refused->message.find("is not the key") != std::string::npos);
  CHECK(s.current() == in_use);
  CHECK_FALSE(s.refresh().changed);  // refused once, not again until the files change
  { std::ofstream(key, std::ios::trunc) << good; }
  auto fixed = s.refresh(true);  // as a reload asks: read even if the stamp looks the same
  CHECK(fixed.changed);
  CHECK_FALSE(fixed.refused);
  CHECK(s.current()->serial() == in_use->serial());

  // An unreadable file is refused the same way.
  std::filesystem::remove(own.at + "/device-1.crt");
  auto gone = s.refresh();
  REQUIRE(gone.refused);
  CHECK(gone.refused->message.find("cannot be read") != std::string::npos);
  CHECK(s.current()->serial() == in_use->serial());
}
