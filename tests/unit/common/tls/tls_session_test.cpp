// The TLS adapter over an in-memory stream, with real certificates from
// deploy/certs/make-certs: mutual authentication, identity from the certificate, and each
// refusal the gateway relies on (no client certificate, another CA, expired, wrong server
// name, TLS 1.1, garbage).
#include "common/tls/tls.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

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
  Files gateway() const { return {main + "/ca.crt", main + "/gateway.crt", main + "/gateway.key"}; }
  Files device(const std::string& name, const std::string& pki = "") const {
    const std::string& d = pki.empty() ? main : pki;
    return {main + "/ca.crt", d + "/" + name + ".crt", d + "/" + name + ".key"};
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
  auto client_ctx = context({Role::client, {pki().main + "/ca.crt", "", ""}, "localhost", ""});
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
       {pki().main + "/ca.crt", pki().other + "/device-1.crt", pki().other + "/device-1.key"},
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
  auto server_ctx =
      context({Role::server,
               {pki().main + "/ca.crt", pki().other + "/gateway.crt", pki().other + "/gateway.key"},
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
  auto r = TlsContext::create({Role::server, {"/nonexistent/ca.crt", "a", "b"}, "", ""});
  REQUIRE_FALSE(r);
  CHECK(r.error().code == tls_errc::config);
  CHECK(r.error().message.find("/nonexistent/ca.crt") != std::string::npos);
  auto no_name = TlsContext::create({Role::client, pki().device("device-1"), "", ""});
  REQUIRE_FALSE(no_name);
  CHECK(no_name.error().message.find("server name") != std::string::npos);
}
