// Helper for buffer_crash_test: appends events to a buffer as fast as it can, with the
// default (durable) settings, and reports on stdout each append that became durable
// ("D first_seq last_seq run first_index"), each ack it is about to make ("I up_to_seq") and
// each ack that returned ("A up_to_seq").
// The test SIGKILLs it at random moments.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "agent/buffer/sqlite_buffer.hpp"

using namespace outpost;
using namespace outpost::agent;

namespace {
void say(const std::string& line) {
  // One write per line (< PIPE_BUF): lines are never interleaved or torn by a kill.
  ssize_t n = ::write(1, line.data(), line.size());
  (void)n;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: buffer_crash_child BUFFER_PATH RUN\n");
    return 2;
  }
  BufferOptions o;  // defaults: synchronous=full, group commit
  o.path = argv[1];
  o.agent_id = "crash-test";
  const std::string run = argv[2];
  SystemClock clock;
  auto buffer = SqliteBuffer::open(o, clock);
  if (!buffer) {
    std::fprintf(stderr, "open: %s\n", buffer.error().describe().c_str());
    return 1;
  }
  std::atomic<int> in_flight{0};
  std::atomic<uint64_t> durable_up_to{0};
  uint64_t acked = 0;
  std::srand(static_cast<unsigned>(std::stoul(run) * 7919 + 1));
  for (uint64_t i = 0;;) {
    while (in_flight.load() >= 32) std::this_thread::yield();
    uint64_t n = 1 + static_cast<uint64_t>(std::rand() % 64);
    std::vector<NewEvent> batch;
    for (uint64_t k = 0; k < n; ++k) {
      NewEvent e;
      e.kind = kAllKinds[(i + k) % 3];
      e.event_time_ns = clock.now_ns();
      e.body = "r" + run + "-" + std::to_string(i + k) + "-";
      e.body.resize(200, 'x');
      batch.push_back(std::move(e));
    }
    ++in_flight;
    const uint64_t first_index = i;
    (*buffer)->append(std::move(batch), [&, first_index](const Result<AppendResult>& r) {
      if (r) {
        say("D " + std::to_string(r->first_seq) + " " + std::to_string(r->last_seq) + " " + run +
            " " + std::to_string(first_index) + "\n");
        uint64_t seen = durable_up_to.load();
        while (r->last_seq > seen && !durable_up_to.compare_exchange_weak(seen, r->last_seq)) {
        }
      }
      --in_flight;
    });
    i += n;
    // Like a forwarder: acknowledge all but the newest 1000 durable events now and then.
    uint64_t durable = durable_up_to.load();
    if (durable > acked + 3000) {
      acked = durable - 1000;
      say("I " + std::to_string(acked) + "\n");  // a kill may land between the ack and "A"
      if ((*buffer)->ack(acked)) say("A " + std::to_string(acked) + "\n");
    }
  }
}
