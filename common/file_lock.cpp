#include "common/file_lock.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/errc.hpp"

namespace outpost {

Result<FileLock> FileLock::acquire(const std::string& path, const std::string& what) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) {
    return make_error(common_errc::config_invalid, "cannot open the lock file " + path + " of " +
                                                       what + ": " + std::strerror(errno));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char pid[32] = {};
    const ssize_t n = ::pread(fd, pid, sizeof pid - 1, 0);
    ::close(fd);
    std::string holder = n > 0 ? std::string(pid, static_cast<size_t>(n)) : "";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    if (err != EWOULDBLOCK) {
      return make_error(common_errc::config_invalid,
                        "cannot lock " + path + " of " + what + ": " + std::strerror(err));
    }
    return make_error(common_errc::in_use,
                      what + " is in use by another process" +
                          (holder.empty() ? std::string() : " (pid " + holder + ")") +
                          ": only one may write it; stop that one first, or point this one "
                          "elsewhere (lock file " +
                          path + ")");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The lock holds all the same; only the pid in a second process's message is missing.
  }
  return FileLock(fd);
}

Result<std::optional<pid_t>> FileLock::holder(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<pid_t>();
    return make_error(common_errc::config_invalid,
                      "cannot open the lock file " + path + ": " + std::strerror(errno));
  }
  if (::flock(fd, LOCK_SH | LOCK_NB) == 0) {  // nobody holds it
    ::close(fd);
    return std::optional<pid_t>();
  }
  char buf[32] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  ::close(fd);
  char* end = nullptr;
  const long pid = n > 0 ? std::strtol(buf, &end, 10) : 0;
  if (pid <= 0) {
    return make_error(common_errc::config_invalid,
                      "the lock file " + path + " is held but names no pid");
  }
  return std::optional<pid_t>(static_cast<pid_t>(pid));
}

Result<pid_t> FileLock::signal_holder(const std::string& path, int sig) {
  auto pid = holder(path);
  if (!pid) return pid.error();
  if (!*pid) {
    return make_error(common_errc::not_running, "nothing holds " + path + ": is it running?");
  }
  if (::kill(**pid, sig) != 0) {
    return make_error(common_errc::not_running,
                      "cannot signal pid " + std::to_string(**pid) + ": " + std::strerror(errno));
  }
  return **pid;
}

FileLock::FileLock(FileLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }

FileLock& FileLock::operator=(FileLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the flock
}

}  // namespace outpost
