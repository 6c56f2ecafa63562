#include "tests/faults/fault_vfs.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>
#include <vector>

namespace outpost::test {
namespace {

constexpr int64_t kSector = 512;

// What one unsynced write or truncation replaced.
struct Undo {
  int64_t offset = 0;  // where the replaced bytes began
  std::string old;     // the bytes that were there (only what existed before)
  int64_t old_size = 0;
  int64_t new_end = 0;  // offset + length written (a truncation: its new size)
  bool truncation = false;
};

struct State {
  std::mutex mu;
  sqlite3_vfs* real = nullptr;
  sqlite3_vfs vfs{};
  std::map<std::string, std::vector<Undo>> unsynced;  // by path: main databases and WALs
  std::vector<std::string> databases;                 // whose -shm goes at a power cut
  uint64_t calls = 0;
  uint64_t fail_at = 0;
  int fail_code = SQLITE_IOERR;
  uint64_t cut_at = 0;
  std::atomic<bool> powered{true};
  uint64_t undone = 0;
};

State& state() {
  static State s;
  return s;
}

struct File {
  sqlite3_file base;
  sqlite3_file* real;  // follows this struct in the same allocation
  std::string* path;   // null: not tracked (temporary files)
};

File* as(sqlite3_file* f) { return reinterpret_cast<File*>(f); }

// Counts an I/O call; returns the error it must give, or SQLITE_OK.
int account(int io_error) {
  State& s = state();
  std::lock_guard lock(s.mu);
  if (!s.powered) return io_error;
  ++s.calls;
  if (s.cut_at != 0 && s.calls == s.cut_at) {
    s.powered = false;
    return io_error;
  }
  if (s.fail_at != 0 && s.calls == s.fail_at) {
    return s.fail_code == SQLITE_IOERR ? io_error : s.fail_code;
  }
  return SQLITE_OK;
}

int64_t real_size(sqlite3_file* real) {
  sqlite3_int64 size = 0;
  if (real->pMethods->xFileSize(real, &size) != SQLITE_OK) return -1;
  return size;
}

// Keeps what [offset, end) of the file holds now, before a write or truncation replaces it.
void remember(File* f, int64_t offset, int64_t end, bool truncation) {
  if (!f->path) return;
  Undo u;
  u.old_size = real_size(f->real);
  u.offset = offset;
  u.new_end = end;
  u.truncation = truncation;
  const int64_t upto = std::min(truncation ? u.old_size : end, u.old_size);
  if (upto > offset) {
    u.old.resize(static_cast<size_t>(upto - offset));
    f->real->pMethods->xRead(f->real, u.old.data(), static_cast<int>(u.old.size()), offset);
  }
  std::lock_guard lock(state().mu);
  state().unsynced[*f->path].push_back(std::move(u));
}

int x_close(sqlite3_file* f) {
  int rc = as(f)->real->pMethods->xClose(as(f)->real);
  delete as(f)->path;
  return rc;
}
int x_read(sqlite3_file* f, void* buf, int n, sqlite3_int64 offset) {
  if (int rc = account(SQLITE_IOERR_READ); rc != SQLITE_OK) return rc;
  return as(f)->real->pMethods->xRead(as(f)->real, buf, n, offset);
}
int x_write(sqlite3_file* f, const void* buf, int n, sqlite3_int64 offset) {
  if (int rc = account(SQLITE_IOERR_WRITE); rc != SQLITE_OK) return rc;
  remember(as(f), offset, offset + n, false);
  return as(f)->real->pMethods->xWrite(as(f)->real, buf, n, offset);
}
int x_truncate(sqlite3_file* f, sqlite3_int64 size) {
  if (int rc = account(SQLITE_IOERR_TRUNCATE); rc != SQLITE_OK) return rc;
  remember(as(f), size, size, true);
  return as(f)->real->pMethods->xTruncate(as(f)->real, size);
}
int x_sync(sqlite3_file* f, int flags) {
  if (int rc = account(SQLITE_IOERR_FSYNC); rc != SQLITE_OK) return rc;
  int rc = as(f)->real->pMethods->xSync(as(f)->real, flags);
  if (rc == SQLITE_OK && as(f)->path) {
    std::lock_guard lock(state().mu);
    state().unsynced.erase(*as(f)->path);
  }
  return rc;
}
int x_file_size(sqlite3_file* f, sqlite3_int64* size) {
  if (int rc = account(SQLITE_IOERR_FSTAT); rc != SQLITE_OK) return rc;
  return as(f)->real->pMethods->xFileSize(as(f)->real, size);
}
int x_lock(sqlite3_file* f, int level) {
  if (int rc = account(SQLITE_IOERR_LOCK); rc != SQLITE_OK) return rc;
  return as(f)->real->pMethods->xLock(as(f)->real, level);
}
int x_unlock(sqlite3_file* f, int level) {
  return as(f)->real->pMethods->xUnlock(as(f)->real, level);
}
int x_check_reserved(sqlite3_file* f, int* out) {
  return as(f)->real->pMethods->xCheckReservedLock(as(f)->real, out);
}
int x_file_control(sqlite3_file* f, int op, void* arg) {
  return as(f)->real->pMethods->xFileControl(as(f)->real, op, arg);
}
int x_sector_size(sqlite3_file* f) { return as(f)->real->pMethods->xSectorSize(as(f)->real); }
int x_device(sqlite3_file* f) { return as(f)->real->pMethods->xDeviceCharacteristics(as(f)->real); }
int x_shm_map(sqlite3_file* f, int region, int size, int extend, void volatile** out) {
  if (!state().powered) return SQLITE_IOERR_SHMMAP;
  return as(f)->real->pMethods->xShmMap(as(f)->real, region, size, extend, out);
}
int x_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
  return as(f)->real->pMethods->xShmLock(as(f)->real, offset, n, flags);
}
void x_shm_barrier(sqlite3_file* f) { as(f)->real->pMethods->xShmBarrier(as(f)->real); }
int x_shm_unmap(sqlite3_file* f, int del) {
  return as(f)->real->pMethods->xShmUnmap(as(f)->real, del);
}

// Version 2: shared memory for WAL, but no xFetch, so that every read comes through here.
const sqlite3_io_methods kMethods = {2,           x_close,          x_read,         x_write,
                                     x_truncate,  x_sync,           x_file_size,    x_lock,
                                     x_unlock,    x_check_reserved, x_file_control, x_sector_size,
                                     x_device,    x_shm_map,        x_shm_lock,     x_shm_barrier,
                                     x_shm_unmap, nullptr,          nullptr};

int x_open(sqlite3_vfs* vfs, sqlite3_filename name, sqlite3_file* file, int flags, int* out_flags) {
  State& s = state();
  File* f = as(file);
  f->real = reinterpret_cast<sqlite3_file*>(f + 1);
  f->path = nullptr;
  file->pMethods = nullptr;
  if (!s.powered) return SQLITE_CANTOPEN;
  int rc = s.real->xOpen(s.real, name, f->real, flags, out_flags);
  if (rc != SQLITE_OK) return rc;
  if (name && (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL))) {
    f->path = new std::string(name);
    if (flags & SQLITE_OPEN_MAIN_DB) {
      std::lock_guard lock(s.mu);
      if (std::find(s.databases.begin(), s.databases.end(), name) == s.databases.end())
        s.databases.emplace_back(name);
    }
  }
  (void)vfs;
  file->pMethods = &kMethods;
  return SQLITE_OK;
}

int x_delete(sqlite3_vfs*, const char* name, int sync_dir) {
  State& s = state();
  if (!s.powered) return SQLITE_IOERR_DELETE;
  int rc = s.real->xDelete(s.real, name, sync_dir);
  std::lock_guard lock(s.mu);
  s.unsynced.erase(name);  // a deletion is taken as durable
  return rc;
}

// Undoes one record on the file at `path` (whole, or the sectors `undo_sector` picks).
template <typename Pick>
void apply(int fd, const Undo& u, Pick&& undo_sector) {
  if (u.truncation) {
    if (!undo_sector(0)) return;
    if (!u.old.empty()) (void)::pwrite(fd, u.old.data(), u.old.size(), u.offset);
    return;
  }
  for (int64_t at = u.offset; at < u.new_end; at = (at / kSector + 1) * kSector) {
    const int64_t end = std::min(u.new_end, (at / kSector + 1) * kSector);
    if (!undo_sector(at / kSector)) continue;
    // Before the old end of the file: the old bytes; beyond it: nothing was there.
    const int64_t old_end = std::min(end, u.offset + static_cast<int64_t>(u.old.size()));
    if (old_end > at) {
      (void)::pwrite(fd, u.old.data() + (at - u.offset), static_cast<size_t>(old_end - at), at);
    }
    if (end > old_end) {
      const std::string zeros(static_cast<size_t>(end - std::max(at, old_end)), '\0');
      (void)::pwrite(fd, zeros.data(), zeros.size(), std::max(at, old_end));
    }
  }
}

}  // namespace

FaultVfs& FaultVfs::install() {
  static FaultVfs instance;
  static std::once_flag once;
  std::call_once(once, [] {
    State& s = state();
    s.real = sqlite3_vfs_find(nullptr);
    if (!s.real) throw std::runtime_error("no default sqlite3_vfs");
    s.vfs = *s.real;
    s.vfs.iVersion = std::min(s.real->iVersion, 3);
    s.vfs.szOsFile = static_cast<int>(sizeof(File)) + s.real->szOsFile;
    s.vfs.zName = "outpost-fault";
    s.vfs.pNext = nullptr;
    s.vfs.xOpen = x_open;
    s.vfs.xDelete = x_delete;
    if (sqlite3_vfs_register(&s.vfs, 1) != SQLITE_OK) throw std::runtime_error("vfs_register");
  });
  return instance;
}

void FaultVfs::cut_power() {
  std::lock_guard lock(state().mu);
  state().powered = false;
}

void FaultVfs::cut_power_at(uint64_t n) {
  std::lock_guard lock(state().mu);
  state().cut_at = n == 0 ? 0 : state().calls + n;
}

void FaultVfs::fail_call(uint64_t n, int code) {
  std::lock_guard lock(state().mu);
  state().fail_at = n == 0 ? 0 : state().calls + n;
  state().fail_code = code;
}

void FaultVfs::restore_power(PowerLoss mode, uint32_t seed) {
  State& s = state();
  std::lock_guard lock(s.mu);
  std::mt19937 rng(seed);
  for (auto& [path, records] : s.unsynced) {
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) continue;
    for (auto it = records.rbegin(); it != records.rend(); ++it) {
      if (mode == PowerLoss::drop) {
        apply(fd, *it, [](int64_t) { return true; });
      } else {
        apply(fd, *it, [&](int64_t) { return (rng() & 1) != 0; });
      }
      if (mode == PowerLoss::drop && !it->truncation && it->new_end > it->old_size) {
        (void)::ftruncate(fd, it->old_size);
      }
      ++s.undone;
    }
    ::close(fd);
  }
  s.unsynced.clear();
  for (const std::string& db : s.databases) ::unlink((db + "-shm").c_str());
  s.cut_at = 0;
  s.fail_at = 0;
  s.powered = true;
}

uint64_t FaultVfs::calls() const {
  std::lock_guard lock(state().mu);
  return state().calls;
}

bool FaultVfs::powered() const {
  std::lock_guard lock(state().mu);
  return state().powered;
}

size_t FaultVfs::unsynced() const {
  std::lock_guard lock(state().mu);
  size_t n = 0;
  for (const auto& [path, records] : state().unsynced) n += records.size();
  return n;
}

uint64_t FaultVfs::writes_undone() const {
  std::lock_guard lock(state().mu);
  return state().undone;
}

}  // namespace outpost::test
