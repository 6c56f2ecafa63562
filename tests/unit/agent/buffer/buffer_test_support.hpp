#pragma once
// Helpers shared by the buffer's unit tests.
#include <string>
#include <vector>

#include "agent/buffer/sqlite_buffer.hpp"
#include "tests/support/temp_dir.hpp"

namespace outpost::test {

inline agent::BufferOptions fast_options(const std::string& path) {
  agent::BufferOptions o;
  o.path = path;
  o.agent_id = "test-agent";
  o.synchronous = agent::Synchronous::normal;  // the crash test covers durability
  o.commit_interval_ns = 0;
  o.segment_shift = 5;  // 32 seqs per segment table: every test crosses segments
  return o;
}

inline NewEvent event_of(EventKind kind, size_t size, int32_t priority = 0, int64_t t = 1) {
  NewEvent e;
  e.kind = kind;
  e.priority = priority;
  e.event_time_ns = t;
  e.body.assign(size, static_cast<char>('a' + (size % 26)));
  return e;
}

inline Result<agent::AppendResult> append_one(agent::Buffer& b, NewEvent e) {
  std::vector<NewEvent> v;
  v.push_back(std::move(e));
  return b.append(std::move(v)).get();
}

}  // namespace outpost::test
