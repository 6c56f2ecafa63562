#pragma once
// The forwarder's timing decisions, as plain values over the time they are given (Clock's
// mono_ns()), so that tests run them on virtual time:
//   - Backoff: how long to wait before the next connection attempt. It doubles after each
//     attempt up to a cap, and starts over once a session made progress. Each wait is drawn
//     from [delay/2, delay] (jitter), so agents that lost the same gateway do not come back
//     in lockstep.
//   - UploadPacer: the upload rate cap, a token bucket of compressed bytes with one second of
//     burst.
//
// Thread-safety: plain values; one thread at a time.

#include <algorithm>
#include <cstdint>
#include <random>

namespace outpost::agent {

class Backoff {
 public:
  Backoff(int64_t initial_ns, int64_t max_ns)
      : initial_(std::max<int64_t>(1, initial_ns)),
        max_(std::max(initial_ns, max_ns)),
        delay_(initial_) {}
  // The wait before the next attempt (in [delay/2, delay]); the delay then doubles.
  template <typename Rng>
  int64_t next(Rng& rng) {
    std::uniform_int_distribution<int64_t> jitter(delay_ / 2, delay_);
    const int64_t wait = jitter(rng);
    delay_ = std::min(max_, delay_ * 2);
    return wait;
  }
  // A session made progress: the next wait is short again.
  void reset() { delay_ = initial_; }
  int64_t delay() const { return delay_; }

 private:
  int64_t initial_, max_, delay_;
};

class UploadPacer {
 public:
  // bytes_per_s == 0: no cap.
  explicit UploadPacer(uint64_t bytes_per_s) : rate_(static_cast<double>(bytes_per_s)) {}
  // `bytes` are about to go at `now`: how long to wait first (0: at once).
  int64_t wait_for(uint64_t bytes, int64_t now) {
    if (rate_ <= 0) return 0;
    if (!started_) {
      tokens_ = rate_;  // one second of burst
      started_ = true;
    } else {
      tokens_ = std::min(rate_, tokens_ + static_cast<double>(now - last_) / 1e9 * rate_);
    }
    last_ = now;
    tokens_ -= static_cast<double>(bytes);
    return tokens_ < 0 ? static_cast<int64_t>(-tokens_ / rate_ * 1e9) : 0;
  }

 private:
  double rate_;
  double tokens_ = 0;
  int64_t last_ = 0;
  bool started_ = false;
};

}  // namespace outpost::agent
