#include "agent/buffer/disk_space.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>

namespace outpost::agent {
namespace {

constexpr uint64_t kMinReserve = 256 * 1024;
constexpr uint64_t kFileSystemShare = 16;  // the reserve is at most 1/16 of the file system

}  // namespace

DiskSpace::DiskSpace(std::string db_path, uint64_t configured_reserve_bytes,
                     uint64_t max_file_bytes)
    : reserve_path_(db_path + ".reserve") {
  const size_t slash = db_path.find_last_of('/');
  dir_ = slash == std::string::npos ? "." : db_path.substr(0, slash + 1);
  if (configured_reserve_bytes == 0) return;
  reserve_bytes_ = configured_reserve_bytes;
  struct statvfs fs {};
  if (::statvfs(dir_.c_str(), &fs) == 0) {
    const uint64_t total = static_cast<uint64_t>(fs.f_blocks) * fs.f_frsize;
    reserve_bytes_ = std::min(reserve_bytes_, std::max(kMinReserve, total / kFileSystemShare));
  }
  if (max_file_bytes > 0) {
    reserve_bytes_ =
        std::min(reserve_bytes_, std::max<uint64_t>(max_file_bytes / kFileSystemShare, 4096));
  }
  struct stat st {};
  held_ = ::stat(reserve_path_.c_str(), &st) == 0 &&
          static_cast<uint64_t>(st.st_size) >= reserve_bytes_;
}

uint64_t DiskSpace::free_bytes() const {
  struct statvfs fs {};
  if (::statvfs(dir_.c_str(), &fs) != 0) return UINT64_MAX;  // unknown: do not refuse for it
  return static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
}

void DiskSpace::hold() {
  if (reserve_bytes_ == 0 || held_) return;
  if (free_bytes() < 2 * reserve_bytes_) return;  // not yet: no thrashing
  int fd = ::open(reserve_path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  const bool ok = ::posix_fallocate(fd, 0, static_cast<off_t>(reserve_bytes_)) == 0;
  ::close(fd);
  if (!ok) {
    ::unlink(reserve_path_.c_str());
    return;
  }
  held_ = true;
}

bool DiskSpace::release() {
  if (!held_) return false;
  ::unlink(reserve_path_.c_str());
  held_ = false;
  return true;
}

}  // namespace outpost::agent
