// The uplink codec never trusts its input: caps on output and window, clear errors for a
// bomb, a lying header, bad magic, a checksum mismatch, truncation and trailing bytes.
#include "common/codec/zstd_codec.hpp"

#include <doctest/doctest.h>
#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_getFrameHeader, to forge a header
#include <zstd.h>

#include <cstring>
#include <random>
#include <string>

using namespace outpost;
using namespace outpost::codec;

namespace {

std::string sample_text(size_t n) {
  std::string s;
  std::mt19937 rng(7);
  const char* words[] = {"sensor", "pixel", "site-42", "temperature", "21.5", "{\"v\":", "}"};
  while (s.size() < n) s += std::string(words[rng() % 7]) + " ";
  s.resize(n);
  return s;
}

// A frame made with the raw zstd API, for headers our Compressor would never write.
std::string raw_frame(const std::string& input, int window_log, bool content_size) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, window_log);
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, content_size ? 1 : 0);
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
  std::string out(ZSTD_compressBound(input.size()), '\0');
  size_t n = ZSTD_compress2(c, out.data(), out.size(), input.data(), input.size());
  ZSTD_freeCCtx(c);
  REQUIRE_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

}  // namespace

TEST_CASE("compress then decompress gives the input back") {
  Compressor c(1);
  for (size_t n : {size_t{0}, size_t{1}, size_t{1000}, size_t{300'000}}) {
    auto text = sample_text(n);
    auto z = c.compress(text);
    REQUIRE(z);
    auto back = decompress(*z, {});
    REQUIRE_MESSAGE(back, (back ? "" : back.error().message));
    CHECK(*back == text);
    if (n >= 1000) CHECK(z->size() < text.size() / 2);
  }
}

TEST_CASE("a decompression bomb is refused by its declared size, before decompressing") {
  Compressor c(1);
  auto bomb = c.compress(std::string(100u << 20, '\0'));  // 100 MiB of zeros
  REQUIRE(bomb);
  CHECK(bomb->size() < 10'000);
  auto r = decompress(*bomb, {.max_output_bytes = 1u << 20});
  REQUIRE_FALSE(r);
  CHECK(r.error().code == codec_errc::too_large);
  CHECK(r.error().message.find("declares 104857600 bytes") != std::string::npos);
}

TEST_CASE("a bomb without a declared size is stopped at the cap while it decompresses") {
  auto bomb = raw_frame(std::string(20u << 20, 'x'), 20, /*content_size=*/false);
  auto r = decompress(bomb, {.max_output_bytes = 1u << 20});
  REQUIRE_FALSE(r);
  CHECK(r.error().code == codec_errc::too_large);
  CHECK(r.error().message.find("more than the limit of 1048576") != std::string::npos);
}

TEST_CASE("a header that understates the content size is caught") {
  auto text = sample_text(100'000);  // above 65,791: the size field is 4 bytes
  auto z = raw_frame(text, 20, true);
  // Rewrite the declared size to claim fewer bytes than the frame holds (a liar that slips
  // under the cap): the frame header's last 4 bytes are the content size for this size class.
  ZSTD_frameHeader h{};
  REQUIRE(ZSTD_getFrameHeader(&h, z.data(), z.size()) == 0);
  size_t header_size = ZSTD_frameHeaderSize(z.data(), z.size());
  REQUIRE(h.frameContentSize == 100'000);
  uint32_t lie = 1000;
  std::memcpy(z.data() + header_size - 4, &lie, 4);  // little-endian, as zstd stores it
  REQUIRE(ZSTD_getFrameContentSize(z.data(), z.size()) == 1000);
  auto r = decompress(z, {.max_output_bytes = 1u << 20});
  REQUIRE_FALSE(r);
  CHECK((r.error().code == codec_errc::corrupt || r.error().code == codec_errc::too_large));
}

TEST_CASE("a frame whose window exceeds the limit is refused") {
  auto z = raw_frame(sample_text(4u << 20), 25, /*content_size=*/false);
  auto r = decompress(z, {.max_output_bytes = 64u << 20, .max_window_log = 20});
  REQUIRE_FALSE(r);
  CHECK(r.error().code == codec_errc::window_too_large);
  CHECK(r.error().message.find("2^20") != std::string::npos);
}

TEST_CASE("bad magic, a flipped bit, truncation and trailing bytes are each a clear error") {
  Compressor c(1);
  auto z = c.compress(sample_text(10'000));
  REQUIRE(z);

  std::string bad_magic = *z;
  bad_magic[0] = 'X';
  auto r1 = decompress(bad_magic, {});
  REQUIRE_FALSE(r1);
  CHECK(r1.error().code == codec_errc::corrupt);
  CHECK(r1.error().message.find("magic") != std::string::npos);

  std::string flipped = *z;
  flipped[flipped.size() - 2] ^= 0x01;  // inside the checksum
  auto r2 = decompress(flipped, {});
  REQUIRE_FALSE(r2);
  CHECK(r2.error().code == codec_errc::corrupt);

  auto r3 = decompress(std::string_view(*z).substr(0, z->size() - 10), {});
  REQUIRE_FALSE(r3);
  CHECK(r3.error().code == codec_errc::truncated);

  auto r4 = decompress(*z + "junk", {});
  REQUIRE_FALSE(r4);
  CHECK(r4.error().code == codec_errc::trailing_bytes);

  auto r5 = decompress("", {});
  REQUIRE_FALSE(r5);
  CHECK(r5.error().code == codec_errc::truncated);
}

TEST_CASE("random bytes never crash the decompressor") {
  std::mt19937 rng(11);
  Compressor c(1);
  auto z = c.compress(sample_text(5000));
  REQUIRE(z);
  int refused = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string mutated = *z;
    for (int k = 0; k < 3; ++k) mutated[rng() % mutated.size()] = static_cast<char>(rng());
    auto r = decompress(mutated, {.max_output_bytes = 1u << 20});
    if (!r) ++refused;
  }
  CHECK(refused > 1900);  // the checksum catches what the block decoder does not
}

// decompress() reuses one zstd context per thread: a frame that failed half way, or a call
// with a wider window limit, must leave nothing behind for the next call.
TEST_CASE("the reused context starts clean: limits and state do not carry over between calls") {
  const std::string input = sample_text(4u << 20);
  const std::string wide = raw_frame(input, 22, /*content_size=*/false);
  REQUIRE(decompress(wide, {.max_output_bytes = 64u << 20, .max_window_log = 23}));
  auto narrow = decompress(wide, {.max_output_bytes = 64u << 20, .max_window_log = 20});
  REQUIRE_FALSE(narrow);  // the earlier call's wider limit does not stay on the context
  CHECK(narrow.error().code == codec_errc::window_too_large);
  std::string cut = wide;
  cut[cut.size() / 2] ^= 0x20;
  CHECK_FALSE(decompress(cut, {}));  // fails mid-frame
  auto again = decompress(wide, {});
  REQUIRE(again);  // and the next frame decodes from a fresh start
  CHECK(*again == input);
}
