// Crash test: a child process appends with the default durable settings and reports each
// durable append over a pipe; the test SIGKILLs it at random moments, 50 times. After each
// kill: the file passes the integrity check, every event reported durable is present exactly
// once with its content, acknowledged events stay deleted, and seqs never repeat.
#include <doctest/doctest.h>

#include <chrono>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "agent/buffer/buffer_inspector.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace outpost;
using namespace outpost::agent;

TEST_CASE("50 SIGKILLs: every event reported durable survives exactly once") {
  test::TempDir dir;
  const std::string path = dir.file("buffer.db");
  std::mt19937 rng(50);
  std::map<uint64_t, std::string> expected;  // seq -> token, not yet acked
  uint64_t acked = 0;                        // acks that returned: those events must be gone
  uint64_t maybe_acked = 0;                  // acks that were started: those events may be gone
  uint64_t highest_seq = 0;
  uint64_t total_durable = 0;

  for (int run = 0; run < 50; ++run) {
    CAPTURE(run);
    test::Child child({OUTPOST_CRASH_CHILD, path, std::to_string(run)});
    std::string out;
    const int lifetime_ms = std::uniform_int_distribution<int>(30, 400)(rng);
    const auto kill_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(lifetime_ms);
    while (std::chrono::steady_clock::now() < kill_at) child.read_some(out, 5);
    child.signal(SIGKILL);
    CHECK(child.wait() == 128 + SIGKILL);
    while (child.read_some(out, 100)) {
    }

    std::istringstream lines(out);
    std::string line;
    uint64_t run_first_seq = 0;
    while (std::getline(lines, line)) {
      std::istringstream f(line);
      char tag;
      f >> tag;
      if (tag == 'D') {
        uint64_t first, last, index;
        std::string r;
        f >> first >> last >> r >> index;
        if (run_first_seq == 0 || first < run_first_seq) run_first_seq = first;
        for (uint64_t s = first; s <= last; ++s) {
          CHECK(expected.count(s) == 0);
          expected[s] = "r" + r + "-" + std::to_string(index + (s - first)) + "-";
          ++total_durable;
        }
      } else if (tag == 'A' || tag == 'I') {
        uint64_t up_to;
        f >> up_to;
        maybe_acked = std::max(maybe_acked, up_to);
        if (tag == 'A') acked = std::max(acked, up_to);
      }
    }
    if (run_first_seq != 0) {
      CHECK(run_first_seq > highest_seq);  // seqs never repeat across restarts
    }
    expected.erase(expected.begin(), expected.upper_bound(maybe_acked));

    auto inspector = BufferInspector::open(path);
    REQUIRE(inspector);
    auto verdict = inspector->verify();
    REQUIRE(verdict);
    REQUIRE_MESSAGE(verdict->ok, verdict->detail);
    std::map<uint64_t, std::string> found;
    std::set<std::string> tokens;
    auto scanned = inspector->scan({}, [&](const StoredEvent& e) {
      std::string token = e.body.substr(0, e.body.find('-', e.body.find('-') + 1) + 1);
      CHECK(tokens.insert(token).second);  // no event twice
      found[e.seq] = token;
      highest_seq = std::max(highest_seq, e.seq);
      return true;
    });
    REQUIRE(scanned);
    for (const auto& [seq, token] : expected) {
      auto it = found.find(seq);
      REQUIRE_MESSAGE(it != found.end(), "durable seq " << seq << " lost");
      CHECK(it->second == token);
    }
    if (!found.empty()) CHECK(found.begin()->first > acked);  // acks stay acked
    for (const auto& [seq, token] : expected) highest_seq = std::max(highest_seq, seq);
  }
  MESSAGE(total_durable << " events reported durable over 50 kills; " << expected.size()
                        << " pending at the end");
  CHECK(total_durable > 10'000);
}
