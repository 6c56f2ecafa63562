// Encryption at rest (docs/buffer.md, "Encryption at rest"): what the file holds, keys rolled
// in and missing, rows whose bytes or metadata were changed, and the inspector's keys.
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "agent/buffer/buffer_inspector.hpp"
#include "agent/buffer/row_seal.hpp"
#include "tests/unit/agent/buffer/buffer_test_support.hpp"

using namespace outpost;
using namespace outpost::agent;

namespace {

tls::AeadKey key_of(char fill) {
  auto k = tls::AeadKey::from_bytes(std::string(32, fill));
  REQUIRE(k);
  return *k;
}

BufferOptions sealed_options(const std::string& path, std::vector<tls::AeadKey> keys,
                             tls::AeadCipher cipher = tls::AeadCipher::chacha20_poly1305) {
  BufferOptions o = test::fast_options(path);
  o.encryption.seal = true;
  o.encryption.cipher = cipher;
  o.encryption.keys = std::move(keys);
  return o;
}

std::unique_ptr<SqliteBuffer> open_ok(const BufferOptions& o, const Clock& clock) {
  auto b = SqliteBuffer::open(o, clock);
  REQUIRE_MESSAGE(b, (b ? "" : b.error().describe()));
  return std::move(*b);
}

// Bodies that say which event they are.
NewEvent numbered(int i) {
  NewEvent e = test::event_of(EventKind::json, 0, i % 3, 1000 + i);
  e.body = "secret payload number " + std::to_string(i);
  return e;
}

void append_numbered(SqliteBuffer& b, int from, int to) {
  std::vector<NewEvent> v;
  for (int i = from; i < to; ++i) v.push_back(numbered(i));
  REQUIRE(b.append(std::move(v)).get());
}

std::vector<std::string> stored_bodies(const std::string& path) {
  std::vector<std::string> out;
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  std::vector<std::string> tables;
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE name GLOB 'events_*' ORDER BY 1", -1,
                     &st, nullptr);
  while (sqlite3_step(st) == SQLITE_ROW) {
    tables.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
  }
  sqlite3_finalize(st);
  for (const std::string& t : tables) {
    sqlite3_prepare_v2(db, ("SELECT body FROM " + t + " ORDER BY seq").c_str(), -1, &st, nullptr);
    while (sqlite3_step(st) == SQLITE_ROW) {
      out.emplace_back(static_cast<const char*>(sqlite3_column_blob(st, 0)),
                       static_cast<size_t>(sqlite3_column_bytes(st, 0)));
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return out;
}

void exec_sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  CHECK_MESSAGE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) == SQLITE_OK,
                (err ? err : ""));
  sqlite3_free(err);
  sqlite3_close(db);
}

std::vector<StoredEvent> read_all(SqliteBuffer& b) {
  auto r = b.read_batch(0, 100'000, 1ULL << 30);
  REQUIRE_MESSAGE(r, (r ? "" : r.error().describe()));
  return *r;
}

uint64_t dropped(const BufferStats& s, DropReason reason) {
  uint64_t n = 0;
  for (const DropCount& d : s.dropped) n += d.reason == reason ? d.count : 0;
  return n;
}

}  // namespace

TEST_CASE("sealed rows: nothing readable in the file, read back whole, sized with the overhead") {
  for (tls::AeadCipher cipher :
       {tls::AeadCipher::chacha20_poly1305, tls::AeadCipher::aes_256_gcm}) {
    CAPTURE(tls::aead_cipher_name(cipher));
    test::TempDir dir;
    SystemClock clock;
    const BufferOptions o = sealed_options(dir.file("b.db"), {key_of('a')}, cipher);
    uint64_t plain_bytes = 0;
    for (int i = 0; i < 100; ++i) plain_bytes += numbered(i).body.size();
    {
      auto b = open_ok(o, clock);
      append_numbered(*b, 0, 100);
      auto events = read_all(*b);
      REQUIRE(events.size() == 100);
      for (int i = 0; i < 100; ++i) CHECK(events[static_cast<size_t>(i)].body == numbered(i).body);
      auto s = b->stats();
      REQUIRE(s);
      CHECK(s->pending_bytes == plain_bytes + 100 * kSealOverheadBytes);
    }
    const auto bodies = stored_bodies(o.path);
    REQUIRE(bodies.size() == 100);
    for (const std::string& body : bodies) {
      CHECK(is_sealed(body));
      CHECK(sealed_key_id(body) == key_of('a').id());
      CHECK(static_cast<uint8_t>(body[2]) == static_cast<uint8_t>(cipher));
      CHECK(body.find("secret") == std::string::npos);
    }
    // Reopened with its key: read back the same.
    auto again = open_ok(o, clock);
    CHECK(read_all(*again).back().body == numbered(99).body);
  }
}

TEST_CASE("a key rolled in: old rows open with the old key, new ones are sealed with the new") {
  test::TempDir dir;
  SystemClock clock;
  const std::string path = dir.file("b.db");
  {
    auto b = open_ok(sealed_options(path, {key_of('a')}), clock);
    append_numbered(*b, 0, 50);
  }
  // Without the key its pending rows were sealed with: refused at open, naming the key id.
  auto refused = SqliteBuffer::open(sealed_options(path, {key_of('b')}), clock);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == buffer_errc::key_missing);
  CHECK(refused.error().message.find(key_of('a').id_hex()) != std::string::npos);
  BufferOptions plain = test::fast_options(path);
  auto no_keys = SqliteBuffer::open(plain, clock);
  REQUIRE_FALSE(no_keys);
  CHECK(no_keys.error().code == buffer_errc::key_missing);

  // The new key seals, the old one still opens.
  {
    auto b = open_ok(sealed_options(path, {key_of('b'), key_of('a')}), clock);
    append_numbered(*b, 50, 80);
    auto events = read_all(*b);
    REQUIRE(events.size() == 80);
    for (int i = 0; i < 80; ++i) CHECK(events[static_cast<size_t>(i)].body == numbered(i).body);
    const auto bodies = stored_bodies(path);
    CHECK(sealed_key_id(bodies[10]) == key_of('a').id());
    CHECK(sealed_key_id(bodies[60]) == key_of('b').id());
    REQUIRE(b->ack(50));  // every row of the old key acknowledged
  }
  // Now the old key is no longer needed.
  auto b = open_ok(sealed_options(path, {key_of('b')}), clock);
  CHECK(read_all(*b).size() == 30);
}

TEST_CASE("a row whose bytes or metadata were changed is quarantined and counted, never read") {
  test::TempDir dir;
  SystemClock clock;
  const BufferOptions o = sealed_options(dir.file("b.db"), {key_of('a')});
  {
    auto b = open_ok(o, clock);
    append_numbered(*b, 0, 40);  // seqs 1..40, in events_0 (1..31) and events_32
  }
  // seq 5: one byte of its ciphertext; seq 33: its priority; seq 34: the body of seq 35.
  exec_sql(o.path,
           "UPDATE events_0 SET body = substr(body, 1, 15) || x'00' || substr(body, 17) "
           "WHERE seq = 5; UPDATE events_32 SET priority = priority + 1 WHERE seq = 33; "
           "UPDATE events_32 SET body = (SELECT body FROM events_32 WHERE seq = 35) "
           "WHERE seq = 34;");
  auto b = open_ok(o, clock);
  std::vector<uint64_t> seen;
  auto n = b->visit_batch(0, 1000, 1ULL << 30, [&](const StoredEventRef& e) {
    seen.push_back(e.seq);
    CHECK(e.body == numbered(static_cast<int>(e.seq) - 1).body);
    return true;
  });
  REQUIRE(n);
  CHECK(*n == 37);
  for (uint64_t bad : {5, 33, 34}) CHECK(std::find(seen.begin(), seen.end(), bad) == seen.end());
  // Quarantined and counted (by the writer, before any ack).
  BufferStats s;
  for (int i = 0; i < 100; ++i) {
    auto st = b->stats();
    REQUIRE(st);
    s = *st;
    if (dropped(s, DropReason::tampered) == 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(dropped(s, DropReason::tampered) == 3);
  CHECK(s.pending_events == 37);
  CHECK(s.quarantined_total == 3);
  auto inspector = BufferInspector::open(o.path);
  REQUIRE(inspector);
  auto q = inspector->quarantine(10);
  REQUIRE(q);
  REQUIRE(q->size() == 3);
  CHECK(q->front().source == "buffer");
  CHECK(q->front().reason.find("does not authenticate") != std::string::npos);
  CHECK(is_sealed(q->front().payload));  // kept as stored, never as plaintext
  // The rest is acknowledged: every appended event is acknowledged or counted as tampered.
  REQUIRE(b->ack(40));
  auto after = b->stats();
  REQUIRE(after);
  CHECK(after->pending_events == 0);
  CHECK(after->acked_seq == 40);
}

TEST_CASE("rows stored in clear before encryption are read; the inspector needs the key") {
  test::TempDir dir;
  SystemClock clock;
  const std::string path = dir.file("b.db");
  {
    auto b = open_ok(test::fast_options(path), clock);
    append_numbered(*b, 0, 10);
  }
  {
    auto b = open_ok(sealed_options(path, {key_of('a')}), clock);
    append_numbered(*b, 10, 20);
    auto events = read_all(*b);
    REQUIRE(events.size() == 20);
    for (int i = 0; i < 20; ++i) CHECK(events[static_cast<size_t>(i)].body == numbered(i).body);
    const auto bodies = stored_bodies(path);
    CHECK_FALSE(is_sealed(bodies[3]));
    CHECK(is_sealed(bodies[13]));
  }
  auto inspector = BufferInspector::open(path);
  REQUIRE(inspector);
  auto stats = inspector->stats();  // the metadata is in clear
  REQUIRE(stats);
  CHECK(stats->pending_events == 20);
  size_t n = 0;
  auto without = inspector->scan({}, [&](const StoredEvent&) { return ++n, true; });
  REQUIRE_FALSE(without);
  CHECK(without.error().code == buffer_errc::key_missing);
  CHECK(without.error().message.find("event seq 11 is sealed with key id " +
                                     key_of('a').id_hex()) != std::string::npos);
  ScanFilter as_stored;
  as_stored.open_sealed = false;
  auto raw = inspector->scan(as_stored, [](const StoredEvent&) { return true; });
  REQUIRE(raw);
  CHECK(*raw == 20);
  BufferEncryption keys;
  keys.keys.push_back(key_of('a'));
  inspector->use_keys(keys);
  std::vector<std::string> bodies;
  REQUIRE(inspector->scan({}, [&](const StoredEvent& e) {
    bodies.push_back(e.body);
    return true;
  }));
  REQUIRE(bodies.size() == 20);
  CHECK(bodies[15] == numbered(15).body);
}
