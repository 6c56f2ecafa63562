// The AEAD under the buffer's encryption at rest: both ciphers open what they sealed, and
// refuse another key, other additional data and any changed byte; key files and their ids.
#include "common/tls/aead.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "tests/support/temp_dir.hpp"

using namespace outpost;
using namespace outpost::tls;

namespace {

AeadKey key_of(char fill) {
  auto k = AeadKey::from_bytes(std::string(32, fill));
  REQUIRE(k);
  return *k;
}

const unsigned char kNonce[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

}  // namespace

TEST_CASE("both ciphers open what they sealed and refuse what was changed") {
  for (AeadCipher cipher : {AeadCipher::chacha20_poly1305, AeadCipher::aes_256_gcm}) {
    CAPTURE(aead_cipher_name(cipher));
    Aead a(key_of('k'), cipher);
    const std::string plain = "an event payload, not to be read from the disk";
    std::string sealed = "head:";
    a.seal(kNonce, "seq 7", plain, sealed);
    REQUIRE(sealed.size() == 5 + plain.size() + kAeadTagBytes);
    CHECK(sealed.find("payload") == std::string::npos);
    const std::string body = sealed.substr(5);
    std::string out;
    REQUIRE(a.open(kNonce, "seq 7", body, out));
    CHECK(out == plain);

    out.clear();
    CHECK_FALSE(a.open(kNonce, "seq 8", body, out));  // other additional data
    CHECK(out.empty());
    unsigned char other_nonce[12] = {};
    CHECK_FALSE(a.open(other_nonce, "seq 7", body, out));
    for (size_t i : {size_t{0}, body.size() / 2, body.size() - 1}) {  // a byte, the tag's too
      std::string changed = body;
      changed[i] = static_cast<char>(changed[i] ^ 0x01);
      CHECK_FALSE(a.open(kNonce, "seq 7", changed, out));
    }
    CHECK_FALSE(a.open(kNonce, "seq 7", body.substr(0, 10), out));  // shorter than a tag
    Aead wrong(key_of('w'), cipher);
    CHECK_FALSE(wrong.open(kNonce, "seq 7", body, out));
    CHECK(out.empty());
  }
  // The two ciphers do not open each other's.
  Aead chacha(key_of('k'), AeadCipher::chacha20_poly1305);
  Aead gcm(key_of('k'), AeadCipher::aes_256_gcm);
  std::string sealed, out;
  chacha.seal(kNonce, "", "x", sealed);
  CHECK_FALSE(gcm.open(kNonce, "", sealed, out));
}

TEST_CASE("key files: 32 bytes or 64 hex digits, with an id; anything else is named") {
  test::TempDir dir;
  const std::string raw(32, '\x07');
  std::ofstream(dir.file("raw.key"), std::ios::binary) << raw;
  std::string hex;
  for (int i = 0; i < 32; ++i) hex += "07";
  std::ofstream(dir.file("hex.key")) << hex << "\n";
  auto a = AeadKey::read_file(dir.file("raw.key"));
  auto b = AeadKey::read_file(dir.file("hex.key"));
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->bytes() == raw);
  CHECK(b->bytes() == raw);
  CHECK(a->id() == b->id());
  CHECK(a->id_hex().size() == 8);
  CHECK(a->id() != key_of('k').id());

  std::ofstream(dir.file("short.key")) << "too short";
  auto s = AeadKey::read_file(dir.file("short.key"));
  REQUIRE_FALSE(s);
  CHECK(s.error().message.find("short.key holds 9 bytes") != std::string::npos);
  auto missing = AeadKey::read_file(dir.file("none.key"));
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message.find("cannot be read") != std::string::npos);
  CHECK(parse_aead_cipher("aes-256-gcm"));
  CHECK_FALSE(parse_aead_cipher("rot13"));
}
