// Fuzz target for what either end of the uplink parses from the other: the frame decoder, a
// Batch's capped zstd payload and its events, and the frames driven through both protocol
// state machines (the gateway's, as if an agent sent them; the agent's, as if a gateway did).
// Built as a libFuzzer target with clang (-DOUTPOST_FUZZ=ON); under ctest,
// fuzz_corpus_main.cpp replays the seed corpus.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/codec/zstd_codec.hpp"
#include "uplink/agent_protocol.hpp"
#include "uplink/frame.hpp"
#include "uplink/gateway_protocol.hpp"

namespace {

class AdmitAll final : public outpost::uplink::RateGate {
 public:
  bool admit(const std::string&, uint64_t) override { return true; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace outpost;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  wire::FrameDecoder decoder(1 << 16);
  AdmitAll rates;
  uplink::SessionLimits limits;
  limits.max_decompressed_bytes = 1 << 20;
  limits.max_window_log = 20;
  limits.max_in_flight_batches = 4;
  uplink::GatewayProtocol gateway(limits, "dev-1", rates);
  uplink::AgentProtocolOptions agent_options;
  agent_options.agent_id = "dev-1";
  uplink::AgentProtocol agent(agent_options, 0);
  agent.start(0);
  bool agent_ended = false;
  uint64_t last_ok_ack = 0;
  int64_t now = 0;
  // Feed in uneven pieces, as TCP would deliver them.
  size_t at = 0, step = 1;
  while (at < input.size()) {
    size_t n = std::min(step, input.size() - at);
    decoder.feed(input.substr(at, n));
    at += n;
    step = step * 3 + 1;
    while (true) {
      auto frame = decoder.next();
      if (!frame) {
        gateway.on_stream_error(frame.error());
        return 0;
      }
      if (!*frame) break;
      now += 1'000'000;
      v1::Frame copy = **frame;
      if (!agent_ended && !agent.on_frame(copy, now)) agent_ended = true;
      (void)agent.take_output();
      if ((*frame)->has_batch()) {
        const auto& b = (*frame)->batch();
        if (b.codec() == v1::CODEC_ZSTD) {
          auto raw =
              codec::decompress(b.payload(), {.max_output_bytes = 1 << 20, .max_window_log = 20});
          if (raw && raw->size() > (1u << 20)) __builtin_trap();  // the cap must hold
        }
      }
      gateway.on_frame(**frame, now);
      uplink::GatewayOutput out = gateway.take_output();
      if (gateway.in_flight() > limits.max_in_flight_batches) __builtin_trap();
      for (const uplink::BatchToWrite& w : out.writes) gateway.on_written(w.batch_seq, {});
      uplink::GatewayOutput answered = gateway.take_output();
      out.frames.insert(out.frames.end(), answered.frames.begin(), answered.frames.end());
      for (const v1::Frame& f : out.frames) {
        if (!f.has_ack() || f.ack().status() == v1::Ack::REJECTED) continue;
        // Acks leave in batch_seq order; an agent's batch_seqs may repeat, never go back.
        if (f.ack().batch_seq() < last_ok_ack) __builtin_trap();
        last_ok_ack = f.ack().batch_seq();
      }
    }
  }
  (void)decoder.finish();
  return 0;
}
