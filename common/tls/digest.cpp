#include "common/tls/digest.hpp"

#include <mbedtls/md.h>
#include <mbedtls/sha256.h>

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace outpost::tls {

namespace {

#if defined(__x86_64__)
// SHA-256 with the x86 SHA extensions (SHA-NI), where the CPU has them: the gateway takes a
// digest of every payload it writes (its provenance), and mbedTLS 2.28's portable code cost
// about 1 us for a 100-byte payload, as much as the rest of the gateway's work for the event.
// digest_test compares it with mbedTLS on every length up to a few blocks.
constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

__attribute__((target("sha,sse4.1,ssse3"))) void blocks_ni(uint32_t state[8],
                                                           const unsigned char* data,
                                                           size_t blocks) {
  const __m128i kSwap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i tmp = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&state[0]));
  __m128i state1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&state[4]));
  tmp = _mm_shuffle_epi32(tmp, 0xB1);                // CDAB
  state1 = _mm_shuffle_epi32(state1, 0x1B);          // EFGH
  __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);  // ABEF
  state1 = _mm_blend_epi16(state1, tmp, 0xF0);       // CDGH
  for (; blocks > 0; --blocks, data += 64) {
    const __m128i abef = state0, cdgh = state1;
    __m128i w[16];
    for (int t = 0; t < 16; ++t) {
      if (t < 4) {
        w[t] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(data + 16 * t)),
                                kSwap);
      } else {
        __m128i x = _mm_sha256msg1_epu32(w[t - 4], w[t - 3]);
        x = _mm_add_epi32(x, _mm_alignr_epi8(w[t - 1], w[t - 2], 4));
        w[t] = _mm_sha256msg2_epu32(x, w[t - 1]);
      }
      __m128i msg =
          _mm_add_epi32(w[t], _mm_loadu_si128(reinterpret_cast<const __m128i*>(&kK[4 * t])));
      state1 = _mm_sha256rnds2_epu32(state1, state0, msg);
      msg = _mm_shuffle_epi32(msg, 0x0E);
      state0 = _mm_sha256rnds2_epu32(state0, state1, msg);
    }
    state0 = _mm_add_epi32(state0, abef);
    state1 = _mm_add_epi32(state1, cdgh);
  }
  tmp = _mm_shuffle_epi32(state0, 0x1B);        // FEBA
  state1 = _mm_shuffle_epi32(state1, 0xB1);     // DCHG
  state0 = _mm_blend_epi16(tmp, state1, 0xF0);  // DCBA
  state1 = _mm_alignr_epi8(state1, tmp, 8);     // ABEF
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&state[0]), state0);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&state[4]), state1);
}

bool have_sha_ni() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool sse41 = (c & (1u << 19)) != 0, ssse3 = (c & (1u << 9)) != 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return sse41 && ssse3 && (b & (1u << 29)) != 0;
}

// False when the CPU has no SHA extensions (the caller then uses mbedTLS).
bool sha256_ni(std::string_view data, unsigned char (&digest)[32]) {
  static const bool usable = have_sha_ni();
  if (!usable) return false;
  uint32_t state[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const size_t full = data.size() / 64;
  blocks_ni(state, p, full);
  unsigned char tail[128] = {};
  const size_t rest = data.size() - full * 64;
  if (rest > 0) std::memcpy(tail, p + full * 64, rest);  // an empty view's data may be null
  tail[rest] = 0x80;
  const size_t tail_blocks = rest + 9 <= 64 ? 1 : 2;
  const uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
  for (int i = 0; i < 8; ++i) {
    tail[tail_blocks * 64 - 1 - i] = static_cast<unsigned char>(bits >> (8 * i));
  }
  blocks_ni(state, tail, tail_blocks);
  for (int i = 0; i < 8; ++i) {
    digest[4 * i] = static_cast<unsigned char>(state[i] >> 24);
    digest[4 * i + 1] = static_cast<unsigned char>(state[i] >> 16);
    digest[4 * i + 2] = static_cast<unsigned char>(state[i] >> 8);
    digest[4 * i + 3] = static_cast<unsigned char>(state[i]);
  }
  return true;
}
#else
bool sha256_ni(std::string_view, unsigned char (&)[32]) { return false; }
#endif

void hex(const unsigned char (&digest)[32], char (&text)[64]) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < 32; ++i) {
    text[2 * i] = kHex[digest[i] >> 4];
    text[2 * i + 1] = kHex[digest[i] & 15];
  }
}

std::string hex(const unsigned char (&digest)[32]) {
  char text[64];
  hex(digest, text);
  return std::string(text, sizeof text);
}

}  // namespace

std::string sha256_hex(std::string_view data) {
  char text[64];
  sha256_hex(data, text);
  return std::string(text, sizeof text);
}

void sha256_hex(std::string_view data, char (&out)[64]) {
  unsigned char digest[32];
  if (!sha256_ni(data, digest)) {
    mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest, 0);
  }
  hex(digest, out);
}

std::string sha256_hex_portable(std::string_view data) {
  unsigned char digest[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest, 0);
  return hex(digest);
}

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
  unsigned char digest[32];
  mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256),
                  reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                  reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return hex(digest);
}

}  // namespace outpost::tls
