// The forwarder's timing decisions on virtual time: no sleeps, the time is a number.
#include "agent/forwarder/pacing.hpp"

#include <doctest/doctest.h>

#include <random>

using namespace outpost::agent;

namespace {
constexpr int64_t kMs = 1'000'000;
}

TEST_CASE("backoff doubles up to its cap, with jitter in [delay/2, delay], and starts over") {
  std::mt19937_64 rng(7);
  Backoff b(250 * kMs, 30'000 * kMs);
  int64_t delay = 250 * kMs;
  for (int i = 0; i < 12; ++i) {
    CAPTURE(i);
    const int64_t wait = b.next(rng);
    CHECK(wait >= delay / 2);
    CHECK(wait <= delay);
    delay = std::min<int64_t>(delay * 2, 30'000 * kMs);
    CHECK(b.delay() == delay);
  }
  CHECK(b.delay() == 30'000 * kMs);
  b.reset();
  CHECK(b.delay() == 250 * kMs);
  CHECK(b.next(rng) <= 250 * kMs);
  // Agents that lost the same gateway do not all come back at the same moment.
  std::mt19937_64 other(8);
  Backoff a(30'000 * kMs, 30'000 * kMs), c(30'000 * kMs, 30'000 * kMs);
  CHECK(a.next(rng) != c.next(other));
}

TEST_CASE("the upload cap: one second of burst, then bytes wait for their time") {
  UploadPacer unlimited(0);
  CHECK(unlimited.wait_for(1u << 30, 0) == 0);

  UploadPacer p(1000);  // bytes per second
  int64_t now = 10 * 1000 * kMs;
  CHECK(p.wait_for(1000, now) == 0);         // the burst
  CHECK(p.wait_for(500, now) == 500 * kMs);  // half a second's worth over
  now += 500 * kMs;                          // the caller waited
  CHECK(p.wait_for(250, now) == 250 * kMs);
  now += 10'000 * kMs;  // idle for long: the burst is one second, not ten
  CHECK(p.wait_for(1000, now) == 0);
  CHECK(p.wait_for(1, now) > 0);
}
