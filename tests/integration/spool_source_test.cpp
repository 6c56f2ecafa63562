// The spool-directory source (docs/sources.md, "Spool directory"): the formats, exactly-once
// progress through the buffer's transactions, failed files, back-pressure, and the real agent
// SIGKILLed while files are dropped into its directory.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "agent/buffer/buffer_inspector.hpp"
#include "agent/buffer/sqlite_buffer.hpp"
#include "agent/sources/spool/spool_source.hpp"
#include "common/clock.hpp"
#include "outpost/v1/event.pb.h"
#include "tests/support/buffer_probe.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace outpost;
using namespace outpost::agent;
using outpost::test::TempDir;

namespace {

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// Drops a file the way producers must: written under a dot name, then renamed in.
void drop(const std::string& dir, const std::string& name, const std::string& text) {
  write_file(dir + "/." + name, text);
  std::filesystem::rename(dir + "/." + name, dir + "/" + name);
}

std::string ndjson_lines(const std::string& tag, int n) {
  std::string out;
  for (int i = 1; i <= n; ++i) {
    out += "{\"file\":\"" + tag + "\",\"n\":" + std::to_string(i) + ",\"pad\":\"abcdefgh\"}\n";
  }
  return out;
}

std::string csv_rows(const std::string& tag, int n) {
  std::string out = "file,n,note\n";
  for (int i = 1; i <= n; ++i) {
    out += tag + "," + std::to_string(i) + ",\"a, \"\"quoted\"\" note\"\n";
  }
  return out;
}

// (spool.file, spool.line) of every event in the buffer file, with how often each is there.
std::map<std::pair<std::string, std::string>, int> stored(const std::string& buffer) {
  std::map<std::pair<std::string, std::string>, int> seen;
  auto inspector = BufferInspector::open(buffer);
  REQUIRE(inspector);
  auto n = inspector->scan({}, [&](const StoredEvent& e) {
    v1::Event ev;
    REQUIRE(ev.ParseFromString(e.body));
    auto file = ev.attributes().find("spool.file");
    auto line = ev.attributes().find("spool.line");
    ++seen[{file == ev.attributes().end() ? "" : file->second,
            line == ev.attributes().end() ? "" : line->second}];
    return true;
  });
  REQUIRE(n);
  return seen;
}

std::vector<std::string> read_all(SpoolReader& r) {
  std::vector<std::string> out;
  while (true) {
    auto next = r.next();
    REQUIRE(next);
    if (!*next) return out;
    out.push_back(**next);
  }
}

int open_file(const std::string& path) { return ::open(path.c_str(), O_RDONLY | O_CLOEXEC); }

// Files a killed agent left part-way: progress rows with an offset (not "done").
int files_cut_mid_way(const std::string& buffer) {
  sqlite3* db = nullptr;
  int n = -1;
  if (sqlite3_open_v2(buffer.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM source_progress WHERE value != 'done'", -1,
                           &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      n = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return n;
}

}  // namespace

TEST_CASE("CSV records: quotes, commas and line breaks inside quotes, CRLF, and what is wrong") {
  auto r = parse_csv_record("a,\"b,c\",\"say \"\"hi\"\"\"\r\nnext", false);
  REQUIRE(r);
  REQUIRE(*r);
  CHECK((*r)->fields == std::vector<std::string>{"a", "b,c", "say \"hi\""});
  CHECK((*r)->length == 22);
  CHECK((*r)->lines == 1);

  auto spanning = parse_csv_record("1,\"two\nlines\"\n", false);
  REQUIRE(spanning);
  REQUIRE(*spanning);
  CHECK((*spanning)->fields[1] == "two\nlines");
  CHECK((*spanning)->lines == 2);

  auto open_quote = parse_csv_record("1,\"not closed", false);
  REQUIRE(open_quote);
  CHECK(!*open_quote);                               // more may come
  CHECK(!parse_csv_record("1,\"not closed", true));  // at the end of the file: an error
  auto last = parse_csv_record("1,2", true);
  REQUIRE(last);
  REQUIRE(*last);
  CHECK((*last)->fields == std::vector<std::string>{"1", "2"});

  auto stray = parse_csv_record("1,a\"b\n", false);
  REQUIRE(!stray);
  CHECK(stray.error().message.find("quote inside") != std::string::npos);
  CHECK(!parse_csv_record("\"a\"b,c\n", false));
  CHECK(!parse_csv_record("a\rb\n", false));
}

TEST_CASE("the reader: NDJSON, CSV resumed mid-file, whole files, and errors that name the line") {
  TempDir dir;
  write_file(dir.file("a.ndjson"), "{\"a\":1}\n\n  {\"a\":2}\r\n{\"a\":3}");
  SpoolReader nd(open_file(dir.file("a.ndjson")), SpoolFormat::ndjson, {});
  CHECK(read_all(nd) == std::vector<std::string>{"{\"a\":1}", "{\"a\":2}", "{\"a\":3}"});

  write_file(dir.file("b.ndjson"), "{\"a\":1}\n[1,2]\n");
  SpoolReader arr(open_file(dir.file("b.ndjson")), SpoolFormat::ndjson, {});
  REQUIRE(arr.next());
  auto bad = arr.next();
  REQUIRE(!bad);
  CHECK(bad.error().message == "line 2: not one JSON object");

  write_file(dir.file("c.ndjson"), "{\"a\":\"\xff\"}\n");
  SpoolReader enc(open_file(dir.file("c.ndjson")), SpoolFormat::ndjson, {});
  auto not_utf8 = enc.next();
  REQUIRE(!not_utf8);
  CHECK(not_utf8.error().message == "line 1: not UTF-8 text");

  write_file(dir.file("d.ndjson"), "{\"a\":1}\n{\"long\":\"" + std::string(300, 'x') + "\"}\n");
  SpoolReader longer(open_file(dir.file("d.ndjson")), SpoolFormat::ndjson, {64, 1024});
  REQUIRE(longer.next());
  auto too_long = longer.next();
  REQUIRE(!too_long);
  CHECK(too_long.error().message.find("line 2: longer than max_event_bytes") == 0);

  write_file(dir.file("e.csv"), "id,name\n1,\"x, y\"\n2,\"two\nlines\"\n3,z\n");
  SpoolReader csv(open_file(dir.file("e.csv")), SpoolFormat::csv, {});
  auto rows = read_all(csv);
  CHECK(rows == std::vector<std::string>{"{\"id\":\"1\",\"name\":\"x, y\"}",
                                         "{\"id\":\"2\",\"name\":\"two\\nlines\"}",
                                         "{\"id\":\"3\",\"name\":\"z\"}"});
  // Resumed after the first row (as the progress row says), it reads the header again.
  SpoolReader again(open_file(dir.file("e.csv")), SpoolFormat::csv, {});
  REQUIRE(again.next());
  const uint64_t offset = again.offset(), line = again.line();
  SpoolReader resumed(open_file(dir.file("e.csv")), SpoolFormat::csv, {});
  REQUIRE(resumed.resume(offset, line));
  CHECK(read_all(resumed) == std::vector<std::string>(rows.begin() + 1, rows.end()));
  CHECK(resumed.record_line() == 5);

  write_file(dir.file("f.csv"), "id,name\n1,x,extra\n");
  SpoolReader wide(open_file(dir.file("f.csv")), SpoolFormat::csv, {});
  auto fields = wide.next();
  REQUIRE(!fields);
  CHECK(fields.error().message == "line 2: 3 fields, but the header has 2");
  write_file(dir.file("g.csv"), "id,id\n1,2\n");
  SpoolReader twice(open_file(dir.file("g.csv")), SpoolFormat::csv, {});
  CHECK(!twice.next());

  write_file(dir.file("h.json"), " {\"whole\": [1, 2]}\n");
  SpoolReader whole(open_file(dir.file("h.json")), SpoolFormat::whole_file, {});
  CHECK(read_all(whole) == std::vector<std::string>{"{\"whole\": [1, 2]}"});
  SpoolReader capped(open_file(dir.file("h.json")), SpoolFormat::whole_file, {1024, 8});
  CHECK(!capped.next());

  CHECK(format_of(SpoolFormat::automatic, "x.jsonl") == SpoolFormat::ndjson);
  CHECK(format_of(SpoolFormat::automatic, "x.csv") == SpoolFormat::csv);
  CHECK(format_of(SpoolFormat::automatic, "x.json") == SpoolFormat::whole_file);
  CHECK(!format_of(SpoolFormat::automatic, "x.txt"));
  CHECK(format_of(SpoolFormat::csv, "x.txt") == SpoolFormat::csv);
}

namespace {

struct Site {
  TempDir dir;
  SystemClock clock;
  std::string spool = dir.file("spool");
  std::unique_ptr<SqliteBuffer> buffer;

  explicit Site(uint64_t max_bytes = 1ULL << 30) {
    std::filesystem::create_directory(spool);
    BufferOptions o;
    o.path = dir.file("buffer.db");
    o.agent_id = "site";
    o.max_bytes = max_bytes;
    auto b = SqliteBuffer::open(o, clock);
    REQUIRE(b);
    buffer = std::move(*b);
  }
  SpoolSourceOptions options() const {
    SpoolSourceOptions o;
    o.directory = spool;
    o.schema = "order.v1";
    o.rescan_interval_ns = 200'000'000;
    o.batch_events = 100;
    return o;
  }
};

}  // namespace

TEST_CASE("each file is stored once and moved to done/; a bad one goes to failed/ with a reason") {
  Site site;
  drop(site.spool, "one.ndjson", ndjson_lines("one", 250));
  drop(site.spool, "two.csv", csv_rows("two", 120));
  drop(site.spool, "three.json", "{\"whole\":true}");
  drop(site.spool, "bad.ndjson", ndjson_lines("bad", 40) + "{broken\n" + ndjson_lines("bad", 5));
  drop(site.spool, "notes.txt", "hello");
  auto source = SpoolSource::start(site.options(), *site.buffer);
  REQUIRE(source);
  const auto& c = (*source)->counters();
  REQUIRE(test::wait_until([&] { return c.files_done + c.files_failed == 5; }, 30));
  // One dropped while it runs: taken at once (inotify), not at the next rescan.
  drop(site.spool, "four.jsonl", ndjson_lines("four", 10));
  REQUIRE(test::wait_until([&] { return c.files_done == 4; }, 30));
  source->reset();

  CHECK(c.files_failed == 2);
  CHECK(c.events == 250 + 120 + 1 + 10);
  auto seen = stored(site.dir.file("buffer.db"));
  CHECK(seen.size() == 250 + 120 + 1 + 10);
  for (const auto& [where, count] : seen) {
    INFO(where.first << ":" << where.second);
    CHECK(count == 1);
    CHECK(where.first != "bad.ndjson");  // a malformed file stores nothing
  }
  CHECK(seen.contains({"one.ndjson", "250"}));
  CHECK(seen.contains({"two.csv", "121"}));  // line 1 is the header
  CHECK(seen.contains({"three.json", ""}));
  for (const char* f : {"one.ndjson", "two.csv", "three.json", "four.jsonl"}) {
    CHECK(std::filesystem::exists(site.spool + "/done/" + f));
    CHECK(!std::filesystem::exists(site.spool + "/" + f));
  }
  std::ifstream reason(site.spool + "/failed/bad.ndjson.reason");
  std::string why;
  std::getline(reason, why);
  CHECK(why == "line 41: not one JSON object");
  CHECK(std::filesystem::exists(site.spool + "/failed/notes.txt.reason"));
  auto left = site.buffer->read_progress("spool:");
  REQUIRE(left);
  CHECK(left->empty());  // every finished file's progress row is gone
}

TEST_CASE("a file whose progress is stored resumes after it, storing nothing twice") {
  Site site;
  // What a killed source left: the first 30 lines stored with their progress, in one commit.
  const std::string text = ndjson_lines("r", 100);
  drop(site.spool, "r.ndjson", text);
  struct stat st {};
  REQUIRE(::stat((site.spool + "/r.ndjson").c_str(), &st) == 0);
  const std::string key = "spool:" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) +
                          ":" + std::to_string(st.st_size) + ":" +
                          std::to_string(st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec);
  SpoolReader reader(open_file(site.spool + "/r.ndjson"), SpoolFormat::ndjson, {});
  std::vector<NewEvent> first;
  for (int i = 0; i < 30; ++i) {
    auto next = reader.next();
    REQUIRE(next);
    v1::Event e;
    e.set_kind(v1::EVENT_KIND_JSON);
    e.set_json(**next);
    (*e.mutable_attributes())["spool.file"] = "r.ndjson";
    (*e.mutable_attributes())["spool.line"] = std::to_string(reader.line());
    NewEvent ne;
    ne.body = e.SerializeAsString();
    first.push_back(std::move(ne));
  }
  std::promise<Result<AppendResult>> done;
  site.buffer->append_with_progress(
      std::move(first),
      {key, std::to_string(reader.offset()) + " " + std::to_string(reader.line())},
      [&](const Result<AppendResult>& r) { done.set_value(r); });
  REQUIRE(done.get_future().get());

  auto source = SpoolSource::start(site.options(), *site.buffer);
  REQUIRE(source);
  REQUIRE(test::wait_until([&] { return (*source)->counters().files_done == 1; }, 30));
  source->reset();
  auto seen = stored(site.dir.file("buffer.db"));
  CHECK(seen.size() == 100);
  for (const auto& [where, count] : seen) CHECK(count == 1);
}

TEST_CASE(
    "a full buffer (reject) pauses the source; it resumes as acks free space, dropping none") {
  Site site(64 * 1024);  // far less than the file
  drop(site.spool, "big.ndjson", ndjson_lines("big", 3000));
  auto source = SpoolSource::start(site.options(), *site.buffer);
  REQUIRE(source);
  const auto& c = (*source)->counters();
  REQUIRE(test::wait_until([&] { return c.waits > 0; }, 30));
  // A forwarder: read and acknowledge what is there until the file is done.
  std::map<std::string, int> lines;
  uint64_t acked = 0;
  REQUIRE(test::wait_until(
      [&] {
        auto batch = site.buffer->read_batch(acked, 500, 1 << 20);
        REQUIRE(batch);
        for (const StoredEvent& e : *batch) {
          v1::Event ev;
          REQUIRE(ev.ParseFromString(e.body));
          ++lines[ev.attributes().at("spool.line")];
          acked = e.seq;
        }
        if (!batch->empty()) REQUIRE(site.buffer->ack(acked));
        return c.files_done == 1 && site.buffer->stats()->pending_events == 0;
      },
      60));
  source->reset();
  CHECK(lines.size() == 3000);
  for (const auto& [line, count] : lines) CHECK(count == 1);
  auto s = site.buffer->stats();
  REQUIRE(s);
  uint64_t dropped = 0;
  for (const DropCount& d : s->dropped) dropped += d.count;
  CHECK(dropped == 0);
}

TEST_CASE("the agent SIGKILLed 10 times while 10 files are dropped: every line once") {
  TempDir dir;
  const std::string spool = dir.file("spool"), buffer = dir.file("buffer.db");
  std::filesystem::create_directory(spool);
  write_file(dir.file("agent.toml"),
             "[agent]\nid = \"site\"\nhttp_listen = \"127.0.0.1:0\"\n[buffer]\npath = \"" + buffer +
                 "\"\n[sources.spool]\nenabled = true\ndirectory = \"" + spool +
                 "\"\nschema = \"order.v1\"\nrescan_interval = \"500ms\"\nbatch_events = 40\n");
  const std::vector<std::string> argv = {OUTPOST_AGENT_BIN, "run", "-c", dir.file("agent.toml")};
  // Six line files of 20,000 each, three whole files, one malformed at line 700.
  constexpr int kLines = 20'000;
  std::vector<std::pair<std::string, std::string>> files;
  for (int i = 0; i < 3; ++i) {
    files.emplace_back("lines" + std::to_string(i) + ".ndjson", ndjson_lines("n", kLines));
    files.emplace_back("rows" + std::to_string(i) + ".csv", csv_rows("c", kLines));
    files.emplace_back("doc" + std::to_string(i) + ".json", "{\"doc\":" + std::to_string(i) + "}");
  }
  files.emplace_back("broken.ndjson",
                     ndjson_lines("b", 699) + "{\"cut\":\n" + ndjson_lines("b", 5));
  std::mt19937 rng(20261207);
  int kills = 0, cut_mid_way = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    drop(spool, files[i].first, files[i].second);
    test::Child agent(argv, false);
    // Mostly once a file is part-way (its progress row has an offset), sometimes at random.
    if (rng() % 4 != 0) {
      (void)test::wait_until([&] { return files_cut_mid_way(buffer) > 0; }, 3);
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 20));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 200));
    }
    ::kill(agent.pid(), SIGKILL);
    CHECK(agent.wait() == 128 + SIGKILL);
    ++kills;
    cut_mid_way += files_cut_mid_way(buffer) > 0 ? 1 : 0;
  }
  CHECK(kills == 10);
  MESSAGE("kills that left a file part-way: " << cut_mid_way);
  CHECK(cut_mid_way >= 3);  // the kills land inside files, not only between them
  // A last run finishes whatever is left, then stops cleanly.
  {
    test::Child agent(argv, false);
    REQUIRE(test::wait_until(
        [&] {
          size_t left = 0;
          for (const auto& e : std::filesystem::directory_iterator(spool)) {
            left += e.is_regular_file() ? 1 : 0;
          }
          return left == 0;
        },
        60));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ::kill(agent.pid(), SIGTERM);
    CHECK(agent.wait() == 0);
  }
  auto seen = stored(buffer);
  CHECK(seen.size() == 6 * kLines + 3);
  int twice = 0;
  for (const auto& [where, count] : seen) twice += count != 1 ? 1 : 0;
  CHECK(twice == 0);
  for (const auto& [name, text] : files) {
    if (name == "broken.ndjson") continue;
    CHECK(std::filesystem::exists(spool + "/done/" + name));
  }
  CHECK(std::filesystem::exists(spool + "/failed/broken.ndjson"));
  std::ifstream reason(spool + "/failed/broken.ndjson.reason");
  std::string why;
  std::getline(reason, why);
  CHECK(why == "line 700: not one JSON object");
  auto inspector = BufferInspector::open(buffer);
  REQUIRE(inspector);
  auto s = inspector->stats();
  REQUIRE(s);
  CHECK(s->dropped.empty());
}
