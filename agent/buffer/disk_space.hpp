#pragma once
// The buffer's guard against a full disk (docs/buffer.md, "A full disk"): acknowledgements
// must always be able to commit, because they are what frees space. Two things keep room for
// them:
//   - the floor: appends are refused once the space left to the buffer (free space on the
//     file system plus free pages inside the database) falls below reserve_bytes(), so the
//     buffer's own appends never take the last of it;
//   - the reserve file "<path>.reserve" of reserve_bytes(), held while the disk has room and
//     released when a write fails with SQLITE_FULL anyway (something else filled the disk).
// reserve_bytes() is the configured disk_reserve, but at most 1/16 of the file system (at
// least 256 KiB), so that a small disk gets a reserve too; with a max_file_bytes, at most 1/16
// of that.
//
// Thread-safety: one thread (the buffer's writer) uses an instance.

#include <cstdint>
#include <string>

namespace outpost::agent {

class DiskSpace {
 public:
  DiskSpace(std::string db_path, uint64_t configured_reserve_bytes, uint64_t max_file_bytes);

  // 0 when the reserve is disabled (disk_reserve = 0).
  uint64_t reserve_bytes() const { return reserve_bytes_; }
  // Free bytes on the file system holding the database, for unprivileged writers.
  uint64_t free_bytes() const;
  // Creates the reserve file if it is not there and the disk has twice its size free.
  void hold();
  // Deletes the reserve file (its space goes to the acks that need it); true if it was held.
  bool release();
  bool held() const { return held_; }
  const std::string& reserve_path() const { return reserve_path_; }

 private:
  std::string dir_;
  std::string reserve_path_;
  uint64_t reserve_bytes_ = 0;
  bool held_ = false;
};

}  // namespace outpost::agent
