// SHA-256 (common/tls/digest.hpp): the SHA-extension path against mbedTLS's portable code on
// every length across the padding boundaries, known vectors, and HMAC-SHA-256 (RFC 4231).
#include "common/tls/digest.hpp"

#include <doctest/doctest.h>

#include <random>

using namespace outpost;

TEST_CASE("SHA-256: known vectors, and the same digest as mbedTLS for every length to 300") {
  CHECK(tls::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(tls::sha256_hex("abc") ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(tls::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  std::mt19937 rng(7);
  for (size_t n = 0; n <= 300; ++n) {
    std::string data(n, '\0');
    for (char& c : data) c = static_cast<char>(rng());
    CAPTURE(n);
    CHECK(tls::sha256_hex(data) == tls::sha256_hex_portable(data));
  }
}

TEST_CASE("HMAC-SHA-256: RFC 4231 test case 2") {
  CHECK(tls::hmac_sha256_hex("Jefe", "what do ya want for nothing?") ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}
