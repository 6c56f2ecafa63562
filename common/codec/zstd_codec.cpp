#include "common/codec/zstd_codec.hpp"

#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cstring>

#include "common/error_category.hpp"

namespace outpost::codec {
namespace {

const char* describe(codec_errc e) {
  switch (e) {
    case codec_errc::too_large:
      return "decompressed size exceeds the limit";
    case codec_errc::window_too_large:
      return "zstd window exceeds the limit";
    case codec_errc::corrupt:
      return "corrupt zstd data";
    case codec_errc::truncated:
      return "truncated zstd frame";
    case codec_errc::trailing_bytes:
      return "bytes after the zstd frame";
    case codec_errc::internal:
      return "zstd internal error";
  }
  return nullptr;
}

struct DctxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

}  // namespace

const std::error_category& codec_category() {
  static const EnumCategory<codec_errc> category("outpost.codec", describe);
  return category;
}

struct Compressor::Impl {
  ZSTD_CCtx* cctx = nullptr;
  // The output is written here and copied out: a fresh zeroed buffer of the worst-case size
  // per call cost the gateway's sink thread more in memset and page faults than the copy of
  // the (much smaller) frame does.
  std::unique_ptr<char[]> scratch;
  size_t scratch_size = 0;
  ~Impl() { ZSTD_freeCCtx(cctx); }
};

Compressor::Compressor(int level) : impl_(std::make_unique<Impl>()) {
  impl_->cctx = ZSTD_createCCtx();
  if (impl_->cctx != nullptr) {
    ZSTD_CCtx_setParameter(impl_->cctx, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(impl_->cctx, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(impl_->cctx, ZSTD_c_contentSizeFlag, 1);
  }
}

Compressor::~Compressor() = default;

Result<std::string> Compressor::compress(std::string_view input) {
  if (impl_->cctx == nullptr) {
    return make_error(codec_errc::internal, "zstd: cannot allocate a compression context");
  }
  const size_t bound = ZSTD_compressBound(input.size());
  if (impl_->scratch_size < bound) {
    impl_->scratch = std::make_unique_for_overwrite<char[]>(bound);
    impl_->scratch_size = bound;
  }
  size_t n = ZSTD_compress2(impl_->cctx, impl_->scratch.get(), bound, input.data(), input.size());
  if (ZSTD_isError(n)) {
    return make_error(codec_errc::internal, std::string("zstd compress: ") + ZSTD_getErrorName(n));
  }
  return std::string(impl_->scratch.get(), n);
}

Result<std::string> decompress(std::string_view input, const DecompressLimits& limits) {
  const std::string cap = std::to_string(limits.max_output_bytes);
  // The header's declared size, when present, is checked first: a liar or a bomb is refused
  // before anything is allocated. It is a claim only; the output is capped as it grows too.
  unsigned long long declared = ZSTD_getFrameContentSize(input.data(), input.size());
  if (declared == ZSTD_CONTENTSIZE_ERROR) {
    const unsigned char magic[4] = {0x28, 0xb5, 0x2f, 0xfd};  // ZSTD_MAGICNUMBER, little-endian
    if (input.size() >= 4 && std::memcmp(input.data(), magic, 4) != 0) {
      return make_error(codec_errc::corrupt, "not a zstd frame (bad magic number)");
    }
    return make_error(input.size() < 4 ? codec_errc::truncated : codec_errc::corrupt,
                      "zstd frame header is unreadable");
  }
  if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared > limits.max_output_bytes) {
    return make_error(codec_errc::too_large, "zstd frame declares " + std::to_string(declared) +
                                                 " bytes, above the limit of " + cap);
  }
  // One context per thread, reset for every frame: making one (and its window buffer) per
  // batch cost the gateway's session threads an allocation and page faults each time.
  thread_local std::unique_ptr<ZSTD_DCtx, DctxDeleter> dctx;
  if (!dctx) dctx.reset(ZSTD_createDCtx());
  if (!dctx) return make_error(codec_errc::internal, "zstd: cannot allocate a context");
  ZSTD_DCtx_reset(dctx.get(), ZSTD_reset_session_and_parameters);
  ZSTD_DCtx_setParameter(dctx.get(), ZSTD_d_windowLogMax, limits.max_window_log);

  std::string out;
  size_t initial = declared != ZSTD_CONTENTSIZE_UNKNOWN ? static_cast<size_t>(declared) : 0;
  out.resize(std::min(limits.max_output_bytes, std::max<size_t>(initial, 64 * 1024)) + 1);
  ZSTD_inBuffer in{input.data(), input.size(), 0};
  ZSTD_outBuffer o{out.data(), out.size(), 0};
  size_t remaining = 1;
  while (true) {
    remaining = ZSTD_decompressStream(dctx.get(), &o, &in);
    if (ZSTD_isError(remaining)) {
      ZSTD_ErrorCode code = ZSTD_getErrorCode(remaining);
      if (code == ZSTD_error_frameParameter_windowTooLarge) {
        return make_error(codec_errc::window_too_large, "zstd frame needs a window above 2^" +
                                                            std::to_string(limits.max_window_log) +
                                                            " bytes");
      }
      return make_error(codec_errc::corrupt,
                        std::string("corrupt zstd data: ") + ZSTD_getErrorName(remaining));
    }
    if (o.pos > limits.max_output_bytes) {
      return make_error(codec_errc::too_large,
                        "zstd frame decompresses to more than the limit of " + cap + " bytes");
    }
    if (remaining == 0) break;  // the frame is complete
    if (o.pos == o.size) {      // grow, up to one byte past the cap (to detect exceeding it)
      size_t grown = std::min(limits.max_output_bytes + 1, out.size() * 2);
      out.resize(grown);
      o.dst = out.data();
      o.size = out.size();
      continue;
    }
    if (in.pos == in.size) {
      return make_error(codec_errc::truncated, "zstd frame ends early (truncated input)");
    }
  }
  if (in.pos != in.size) {
    return make_error(codec_errc::trailing_bytes,
                      std::to_string(in.size - in.pos) + " bytes follow the zstd frame");
  }
  out.resize(o.pos);
  return out;
}

}  // namespace outpost::codec
