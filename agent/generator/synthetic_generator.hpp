#pragma once
// SyntheticGenerator: a stand-in source for demos and load tests. It appends a repeatable mix
// of pixel hits, sensor readings and JSON events (about 200 bytes each) to a Buffer at a set
// rate, in batches, and counts what the buffer accepted and refused.
//
// Thread-safety: start() runs one thread; counters may be read from any thread. The Buffer
// and Clock must outlive the generator; its destructor stops and joins the thread.

#include <atomic>
#include <cstdint>
#include <thread>

#include "agent/buffer/buffer.hpp"
#include "agent/config.hpp"
#include "common/clock.hpp"

namespace outpost::agent {

// The i-th synthetic event (deterministic in i): kinds rotate pixel, sensor, json.
NewEvent synthetic_event(uint64_t i, int64_t now_ns);

class SyntheticGenerator {
 public:
  SyntheticGenerator(Buffer& buffer, const Clock& clock, GeneratorConfig config);
  ~SyntheticGenerator();

  void start();
  void stop();
  bool done() const { return done_; }
  uint64_t accepted() const { return accepted_; }
  uint64_t refused() const { return refused_; }

 private:
  void run();

  Buffer& buffer_;
  const Clock& clock_;
  GeneratorConfig config_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> refused_{0};
};

}  // namespace outpost::agent
