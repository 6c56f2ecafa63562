#pragma once
// A device's backlog for the uplink benchmarks: `events` of the demo generator's events
// (synthetic_event), appended to a fresh buffer file in batches of 1000. json_only: every
// event an order.v1 JSON payload (the generator's k % 3 == 2 events). Exits on failure.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "agent/buffer/sqlite_buffer.hpp"
#include "agent/generator/synthetic_generator.hpp"
#include "common/clock.hpp"

namespace outpost::bench {

inline void fill_backlog(const std::string& path, const std::string& agent_id, uint64_t events,
                         bool json_only = false, const agent::BufferEncryption& encryption = {}) {
  agent::BufferOptions o;
  o.path = path;
  o.encryption = encryption;  // sealed as the agent would seal them
  o.agent_id = agent_id;
  o.max_bytes = 64ULL << 30;
  SystemClock clock;
  auto b = agent::SqliteBuffer::open(o, clock);
  if (!b) std::exit(1);
  for (uint64_t i = 0; i < events; i += 1000) {
    std::vector<NewEvent> batch;
    for (uint64_t k = i; k < std::min(events, i + 1000); ++k) {
      batch.push_back(agent::synthetic_event(json_only ? k * 3 + 2 : k, clock.now_ns()));
    }
    if (!(*b)->append(std::move(batch)).get()) std::exit(1);
  }
}

}  // namespace outpost::bench
