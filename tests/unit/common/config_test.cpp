#include <doctest/doctest.h>

#include <map>

#include "common/config.hpp"
#include "common/errc.hpp"
#include "common/exit_code.hpp"
#include "common/units.hpp"

using namespace outpost;

TEST_CASE("durations and sizes parse with units and refuse what is ambiguous") {
  CHECK(parse_duration_ns("250ms") == 250'000'000);
  CHECK(parse_duration_ns("1h30m") == 5'400'000'000'000);
  CHECK(parse_duration_ns("7d") == 7 * 86'400'000'000'000);
  CHECK_FALSE(parse_duration_ns("10"));  // no unit
  CHECK_FALSE(parse_duration_ns("10 parsecs"));
  CHECK_FALSE(parse_duration_ns("99999999999999999999d"));
  CHECK(parse_bytes("512MiB") == 512ULL << 20);
  CHECK(parse_bytes("2GB") == 2'000'000'000ULL);
  CHECK(parse_bytes("4096") == 4096);
  CHECK_FALSE(parse_bytes("lots"));
  CHECK_FALSE(parse_bytes("-1"));
  CHECK(format_duration_ns(5'400'000'000'000) == "1h30m");
  CHECK(format_bytes(1536) == "1.5 KiB");
}

TEST_CASE("a bad value names the file, the key, the value and what is allowed") {
  auto doc = ConfigDoc::parse_string("[buffer]\nmax_bytes = \"lots\"\n", "agent.toml");
  REQUIRE(doc);
  auto v = doc->bytes("buffer.max_bytes", "1GiB", 1 << 20, 1ULL << 40);
  REQUIRE_FALSE(v);
  CHECK(v.error().code == common_errc::config_invalid);
  const std::string& m = v.error().message;
  CHECK(m.find("agent.toml, line 2:") != std::string::npos);
  CHECK(m.find("buffer.max_bytes") != std::string::npos);
  CHECK(m.find("\"lots\"") != std::string::npos);
  CHECK(m.find("512MiB") != std::string::npos);

  auto c = doc->choice("buffer.synchronous", "full", {"off", "normal", "full"});
  CHECK(c);
  auto doc2 = ConfigDoc::parse_string("[buffer]\nsynchronous = \"sometimes\"\n", "a.toml");
  auto c2 = doc2->choice("buffer.synchronous", "full", {"off", "normal", "full"});
  REQUIRE_FALSE(c2);
  CHECK(c2.error().message.find("one of off, normal, full") != std::string::npos);
  auto i = doc2->integer("buffer.synchronous", 1, 0, 10);
  REQUIRE_FALSE(i);
  CHECK(i.error().message.find("an integer from 0 to 10") != std::string::npos);
}

TEST_CASE("unknown keys are errors, not ignored") {
  auto doc = ConfigDoc::parse_string("[buffer]\nmax_byts = 5\n", "agent.toml");
  REQUIRE(doc);
  (void)doc->bytes("buffer.max_bytes", "1GiB", 0, 1ULL << 40);
  auto r = doc->check_no_unknown_keys();
  REQUIRE_FALSE(r);
  CHECK(r.error().code == common_errc::config_unknown_key);
  CHECK(r.error().message.find("buffer.max_byts") != std::string::npos);
  CHECK(r.error().message.find("agent.toml, line 2:") != std::string::npos);
}

TEST_CASE("an error in a --set value names the --set, not the file") {
  auto doc = ConfigDoc::parse_string("[buffer]\nmax_bytes = \"1GiB\"\n[agent]\nid = \"a\"\n",
                                     "agent.toml");
  REQUIRE(doc);
  REQUIRE(doc->set_override("buffer.max_bytes=lots"));
  REQUIRE(doc->set_override("buffer.typo=1"));
  auto v = doc->bytes("buffer.max_bytes", "1GiB", 1 << 20, 1ULL << 40);
  REQUIRE_FALSE(v);
  CHECK(v.error().message.rfind("--set buffer.max_bytes: buffer.max_bytes = \"lots\"", 0) == 0);
  CHECK(v.error().message.find("agent.toml") == std::string::npos);
  // A value from the file still names the file and its line.
  auto id = doc->integer("agent.id", 0, 0, 10);
  REQUIRE_FALSE(id);
  CHECK(id.error().message.rfind("config agent.toml, line 4: agent.id", 0) == 0);
  auto r = doc->check_no_unknown_keys();
  REQUIRE_FALSE(r);
  CHECK(r.error().message.rfind("--set buffer.typo: unknown key buffer.typo", 0) == 0);
}

TEST_CASE("overrides replace or add keys, typed as TOML when they parse as TOML") {
  auto doc = ConfigDoc::parse_string("[buffer]\npath = \"/a\"\n", "agent.toml");
  REQUIRE(doc);
  REQUIRE(doc->set_override("buffer.path=/b"));
  REQUIRE(doc->set_override("buffer.commit_max_events=50"));
  REQUIRE(doc->set_override("generator.enabled=true"));
  CHECK(*doc->string("buffer.path", "") == "/b");
  CHECK(*doc->integer("buffer.commit_max_events", 1, 1, 100) == 50);
  CHECK(*doc->boolean("generator.enabled", false));
  CHECK_FALSE(doc->set_override("no-equals-sign"));
  CHECK_FALSE(doc->set_override("buffer.path.deeper=1"));
}

TEST_CASE("a file that is not TOML is an error with its line") {
  auto doc = ConfigDoc::parse_string("[buffer\npath = 1\n", "broken.toml");
  REQUIRE_FALSE(doc);
  CHECK(doc.error().code == common_errc::config_unreadable);
  CHECK(doc.error().message.find("broken.toml") != std::string::npos);
  CHECK(doc.error().message.find("line 1") != std::string::npos);
}

TEST_CASE("one exit-code rule: 2 for a configuration error, 1 for any other") {
  CHECK(exit_code_for(make_error(common_errc::config_invalid, "x")) == 2);
  CHECK(exit_code_for(make_error(common_errc::config_unknown_key, "x")) == 2);
  CHECK(exit_code_for(make_error(common_errc::config_unreadable, "x")) == 2);
  CHECK(exit_code_for(make_error(common_errc::in_use, "x")) == 1);
  CHECK(exit_code_for(make_error(common_errc::bad_input, "x")) == 1);
}

TEST_CASE("quoted keys with dots: passed through, compared, and named when unknown") {
  auto a =
      ConfigDoc::parse_string("[kafka]\n\"security.protocol\" = \"ssl\"\nacks = 1\n", "a.toml");
  auto b = ConfigDoc::parse_string("[kafka]\n\"security.protocol\" = \"plaintext\"\nacks = 1\n",
                                   "b.toml");
  REQUIRE(a);
  REQUIRE(b);
  auto pass = a->passthrough("kafka");
  REQUIRE(pass);
  CHECK(std::map<std::string, std::string>(pass->begin(), pass->end()) ==
        std::map<std::string, std::string>{{"security.protocol", "ssl"}, {"acks", "1"}});
  // A reload sees the quoted key's new value.
  CHECK(changed_settings(a->settings(), b->settings()) ==
        std::vector<std::string>{"kafka.security.protocol"});
  // Nothing asked for them: the unknown one is named with its line.
  auto unknown = b->check_no_unknown_keys();
  REQUIRE_FALSE(unknown);
  CHECK_MESSAGE(unknown.error().message.find("b.toml, line ") != std::string::npos,
                unknown.error().message);
}
