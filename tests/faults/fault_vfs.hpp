#pragma once
// A sqlite3_vfs over the default one, for the fault tests (tests/faults/, docs/RELIABILITY.md):
// it models what a disk does to writes that were not synced, and fails I/O calls on demand,
// as SQLite's own crash-test and I/O-error layers do.
//
//  - Power loss. Every xWrite and xTruncate since a file's last xSync is kept as an undo record
//    (the bytes it replaced). cut_power() makes every later I/O call fail (the machine is off);
//    the test then lets go of its connections, and restore_power(mode) rolls the files back:
//    `drop` undoes every unsynced write (the cache was lost whole), `tear` undoes a random half
//    of the 512-byte sectors of each one (some sectors reached the platter, some did not), and
//    the -shm file goes (it lives in memory across a reboot). I/O works again afterwards.
//  - I/O errors. fail_call(n, code) makes the n-th I/O call from now (read, write, sync,
//    truncate, lock, file size; 1-based) return `code` (SQLITE_IOERR_WRITE, SQLITE_FULL, ...);
//    the calls after it work again.
//
// install() registers it once as the default VFS, so that code that opens databases the usual
// way (the agent's buffer) goes through it without knowing.
#include <cstdint>
#include <string>

namespace outpost::test {

enum class PowerLoss { drop, tear };

class FaultVfs {
 public:
  static FaultVfs& install();

  // From the next I/O call on, every call fails with SQLITE_IOERR, until restore_power().
  void cut_power();
  // Rolls every file back to what a power cut leaves (see above), forgets the undo records,
  // and lets I/O work again. Call it once the connections that used the files are closed.
  void restore_power(PowerLoss mode, uint32_t seed);
  // Cut the power by itself at the n-th I/O call from now (that call already fails); 0: never.
  void cut_power_at(uint64_t n);
  // The n-th I/O call from now fails with `code`; 0: none.
  void fail_call(uint64_t n, int code);
  // I/O calls counted so far (the ones fail_call and cut_power_at count).
  uint64_t calls() const;
  bool powered() const;
  // Undo records held now (unsynced writes and truncations).
  size_t unsynced() const;
  // Undo records applied (wholly or in part) by restore_power() since install().
  uint64_t writes_undone() const;
};

}  // namespace outpost::test
