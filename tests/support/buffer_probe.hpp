#pragma once
// Looking into a running agent's buffer from a test (read-only, safe beside the agent), and
// waiting for a condition.
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#include "agent/buffer/buffer_inspector.hpp"

namespace outpost::test {

// Events not yet acknowledged; UINT64_MAX while the file cannot be read.
inline uint64_t pending(const std::string& buffer) {
  auto inspector = agent::BufferInspector::open(buffer);
  if (!inspector) return UINT64_MAX;
  auto s = inspector->stats();
  return s ? s->pending_events : UINT64_MAX;
}

// The next seq the buffer will assign; 0 while the buffer file does not exist yet.
inline uint64_t next_seq(const std::string& buffer) {
  auto inspector = agent::BufferInspector::open(buffer);
  if (!inspector) return 0;
  auto s = inspector->stats();
  return s ? s->next_seq : 0;
}

template <typename Pred>
bool wait_until(Pred pred, int seconds) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return pred();
}

}  // namespace outpost::test
