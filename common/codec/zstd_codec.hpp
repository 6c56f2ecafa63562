#pragma once
// The uplink's compression: zstd frames with a checksum, and a decompressor that never
// trusts its input. Both sides use it: the agent compresses a batch's payload, the gateway
// decompresses it under the limits of its session (docs/protocol.md, "Limits").
//
// zstd by default accepts a 128 MiB window and believes the frame header's content size;
// decompress() caps both, and the output, before and while it decompresses.
//
// Thread-safety: decompress() may be called from any thread (it keeps one zstd context per
// thread, reset for every call); a Compressor is one thread's.

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include "common/result.hpp"

namespace outpost::codec {

enum class codec_errc {
  too_large = 1,     // the output would exceed max_output_bytes (a bomb, or a lying header)
  window_too_large,  // the frame needs a window above max_window_log
  corrupt,           // not a zstd frame, bad magic, a corrupt block, a checksum mismatch
  truncated,         // the input ends inside the frame
  trailing_bytes,    // bytes after the frame
  internal,          // zstd could not allocate or was misused
};
const std::error_category& codec_category();
inline std::error_code make_error_code(codec_errc e) {
  return {static_cast<int>(e), codec_category()};
}

struct DecompressLimits {
  size_t max_output_bytes = 64u << 20;
  int max_window_log = 23;  // 8 MiB; level 1..9 frames of batches need far less
};

// Reuses its zstd context across calls (allocating one costs more than compressing a batch).
class Compressor {
 public:
  explicit Compressor(int level = 1);
  ~Compressor();
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;

  // One zstd frame with the content size and a checksum.
  Result<std::string> compress(std::string_view input);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Exactly one zstd frame in `input`, decompressed within `limits`.
Result<std::string> decompress(std::string_view input, const DecompressLimits& limits);

}  // namespace outpost::codec

template <>
struct std::is_error_code_enum<outpost::codec::codec_errc> : std::true_type {};
