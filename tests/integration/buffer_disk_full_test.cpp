// A buffer on a real, tiny tmpfs: the disk fills (ENOSPC / SQLITE_FULL), appends fail with a
// clear error, nothing stored is lost, and writing resumes by itself after acks free space.
// Needs permission to mount (root); exits 77 (skipped) without it.
#include <doctest/doctest.h>
#include <sys/mount.h>

#include <filesystem>

#include "agent/buffer/sqlite_buffer.hpp"
#include "agent/buffer/sqlite_db.hpp"
#include "tests/support/temp_dir.hpp"

using namespace outpost;
using namespace outpost::agent;

TEST_CASE("a full tmpfs is an error to producers, loses nothing, and heals after acks") {
  test::TempDir dir;
  if (::mount("tmpfs", dir.path().c_str(), "tmpfs", 0, "size=16m") != 0) {
    MESSAGE("cannot mount a tmpfs here (not root?): skipped");
    std::exit(77);
  }
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{dir.path()};

  BufferOptions o;
  o.path = dir.file("buffer.db");
  o.agent_id = "disk-full";
  o.disk_reserve_bytes = 1 << 20;
  SystemClock clock;
  auto opened = SqliteBuffer::open(o, clock);
  REQUIRE(opened);
  auto& b = **opened;
  uint64_t stored = 0;
  Result<AppendResult> r = AppendResult{};
  uint64_t max_wal = 0;
  while (stored < 1'000'000) {
    std::vector<NewEvent> batch(50);
    for (auto& e : batch) e.body.assign(200, 'd');
    r = b.append(std::move(batch)).get();
    max_wal = std::max<uint64_t>(max_wal, sqlite::file_size(o.path + "-wal"));
    if (!r) break;
    stored += 50;
  }
  REQUIRE_FALSE(r);
  CHECK(r.error().code == buffer_errc::disk_full);
  MESSAGE("stored " << stored << " events before the disk was full: " << r.error().message);
  // The floor refused, not SQLite: the reserve is still held, and the WAL never grew past
  // what the reserve can absorb when a checkpoint copies it into the database file.
  CHECK(r.error().message.find("nearly full") != std::string::npos);
  CHECK(std::filesystem::exists(o.path + ".reserve"));
  MESSAGE("largest WAL seen: " << max_wal << " bytes");
  CHECK(max_wal <= (1u << 20) / 2);
  CHECK(b.healthy());
  auto all = b.read_batch(0, 10'000'000, 1ULL << 40);
  REQUIRE(all);
  CHECK(all->size() == stored);

  // Acks must work on a full disk (they are what frees it), then appends resume.
  auto acked = b.ack(stored * 3 / 4);
  REQUIRE_MESSAGE(acked, (acked ? "" : acked.error().message));
  Result<AppendResult> again = AppendResult{};
  for (int i = 0; i < 10; ++i) {
    again = b.append({NewEvent{EventKind::json, 0, 0, std::string(200, 'f')}}).get();
    REQUIRE_MESSAGE(again, (again ? "" : again.error().message));
  }
  CHECK(again->last_seq == stored + 10);
}
