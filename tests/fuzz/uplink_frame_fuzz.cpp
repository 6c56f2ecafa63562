// Fuzz target for what the gateway parses from an agent's connection: the frame decoder, then
// a Batch's capped zstd payload and its events. Built as a libFuzzer target with clang
// (-DOUTPOST_FUZZ=ON); under ctest, fuzz_corpus_main.cpp replays the seed corpus.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/codec/zstd_codec.hpp"
#include "uplink/frame.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace outpost;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  wire::FrameDecoder decoder(1 << 16);
  // Feed in uneven pieces, as TCP would deliver them.
  size_t at = 0, step = 1;
  while (at < input.size()) {
    size_t n = std::min(step, input.size() - at);
    decoder.feed(input.substr(at, n));
    at += n;
    step = step * 3 + 1;
    while (true) {
      auto frame = decoder.next();
      if (!frame) return 0;
      if (!*frame) break;
      if (!(*frame)->has_batch()) continue;
      const auto& b = (*frame)->batch();
      std::string payload = b.payload();
      if (b.codec() == v1::CODEC_ZSTD) {
        auto raw = codec::decompress(payload, {.max_output_bytes = 1 << 20, .max_window_log = 20});
        if (!raw) continue;
        if (raw->size() > (1u << 20)) __builtin_trap();  // the cap must hold
        payload = std::move(*raw);
      }
      (void)wire::decode_payload(payload, b.event_count(), b.first_seq(), b.last_seq());
    }
  }
  (void)decoder.finish();
  return 0;
}
