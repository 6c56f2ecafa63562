#pragma once
// An exclusive lock held for a process's life on state that only one process may write: the
// gateway's file-sink directory, the agent's buffer file. flock(2) on a lock file, which also
// holds the holder's pid so that a second process can say who is in its way. The kernel drops
// the lock when the process dies (SIGKILL included): there is never a stale lock to clean up.
//
// Thread-safety: a FileLock is a value owned by one thread; it releases the lock when it is
// destroyed.

#include <sys/types.h>

#include <optional>
#include <string>

#include "common/result.hpp"

namespace outpost {

class FileLock {
 public:
  // Takes the lock on `path` (created if missing) without waiting. `what` names the state for
  // the error ("sink directory /var/lib/outpost/sink"). common_errc::in_use, naming the
  // holder's pid, when another process holds it.
  static Result<FileLock> acquire(const std::string& path, const std::string& what);

  // The pid of the process that holds the lock on `path` now; nullopt when none does (no
  // file, or nobody holds it): `outpost-agent reload` finds the running agent this way.
  static Result<std::optional<pid_t>> holder(const std::string& path);
  // Sends `sig` to that holder (`outpost-agent reload`, `outpost-gateway reload`): its pid, or
  // an error a person can act on when nothing holds the lock or the signal cannot be sent.
  static Result<pid_t> signal_holder(const std::string& path, int sig);

  FileLock() = default;
  FileLock(FileLock&& other) noexcept;
  FileLock& operator=(FileLock&& other) noexcept;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock();

  bool held() const { return fd_ >= 0; }

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace outpost
