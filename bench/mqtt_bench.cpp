// mqtt_bench: QoS 1 sensor readings from a real mosquitto into the agent's buffer, against
// mosquitto_sub receiving the same stream as the reference limit.
//
// Each run publishes N numbered QoS 1 messages to a persistent session while its subscriber
// is away, then starts the subscriber and times it from its start until it holds all N:
//   - reference: `mosquitto_sub -c -q 1 -C N` (it exits after the N-th message);
//   - agent:     `outpost-agent run` with the MQTT source, until the buffer holds all N,
//                once with sources.mqtt.commit = "each" and once with "grouped" for each
//                max_uncommitted in --windows (the most a kill can lose).
// Both include process start and connect, which is what a restarting device sees.
//
// Usage: mqtt_bench [--messages N] [--runs R] [--windows W,W,...]   (50000, 3, 1000,64,8)
// Needs mosquitto and mosquitto-clients (Debian). Figures are medians; the last lines are the
// figures.
#include <mqtt/async_client.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_support.hpp"
#include "tests/e2e/uplink_support.hpp"

using namespace outpost;
using bench::median;
using Clock = std::chrono::steady_clock;

namespace {

pid_t spawn(const std::vector<std::string>& argv, bool quiet) {
  pid_t pid = ::fork();
  if (pid == 0) {
    // The child starts with no signal blocked: the parent's threads may block some (and
    // mosquitto_sub -W times out with SIGALRM).
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (quiet) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
    }
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

void publish(uint16_t port, int first, int count) {
  mqtt::async_client client("tcp://127.0.0.1:" + std::to_string(port), "mqtt-bench-publisher");
  client.connect()->wait();
  std::deque<mqtt::delivery_token_ptr> window;
  for (int i = first; i < first + count; ++i) {
    window.push_back(client.publish("sensors/bench/counter", std::to_string(i), 1, false));
    if (window.size() >= 64) {  // Paho queues at most 100 commands
      window.front()->wait();
      window.pop_front();
    }
  }
  for (auto& t : window) t->wait();
  client.disconnect()->wait();
}

// Events ever stored: next_seq - 1, from the meta table (a cheap read, so that polling it
// often does not take CPU from the agent; nothing is acknowledged in this bench).
uint64_t buffered(const std::string& path) {
  sqlite3* db = nullptr;
  uint64_t n = 0;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'next_seq'", -1, &st, nullptr) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      n = static_cast<uint64_t>(sqlite3_column_int64(st, 0)) - 1;
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return n;
}

double reference_run(uint16_t port, int messages) {
  const std::string p = std::to_string(port);
  const std::vector<std::string> sub{
      "/usr/bin/mosquitto_sub", "-h", "127.0.0.1", "-p", p,          "-c", "-i",
      "mqtt-bench-reference",   "-q", "1",         "-t", "sensors/#"};
  {
    // Make the persistent session, then leave. (Not with -W 1: mosquitto_sub 2.0.11 can
    // miss its own SIGALRM and wait for ever.)
    const pid_t once = spawn(sub, true);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    ::kill(once, SIGKILL);  // the session stays (-c); a stuck client would ignore SIGTERM
    ::waitpid(once, nullptr, 0);
  }
  publish(port, 0, messages);
  auto argv = sub;
  argv.insert(argv.end(), {"-C", std::to_string(messages)});
  const auto t0 = Clock::now();
  int status = 0;
  ::waitpid(spawn(argv, true), &status, 0);
  return messages / std::chrono::duration<double>(Clock::now() - t0).count();
}

struct AgentRun {
  double rate = 0, cpu_seconds = 0, rss_mib = 0;
  bool complete = false;
};

// commit "each", or "grouped" with max_uncommitted = window.
AgentRun agent_run(uint16_t port, int messages, const std::string& dir, const std::string& commit,
                   long window) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string buffer = dir + "/buffer.db";
  test::write_file(dir + "/agent.toml",
                   "[agent]\nid = \"mqtt-bench\"\nhttp_listen = \"\"\nlog_level = \"warn\"\n"
                   "[buffer]\npath = \"" +
                       buffer +
                       "\"\n[sources.mqtt]\nenabled = true\n"
                       "broker = \"tcp://127.0.0.1:" +
                       std::to_string(port) + "\"\nclient_id = \"mqtt-bench-agent-" + commit +
                       std::to_string(window) + "\"\ncommit = \"" + commit +
                       "\"\nmax_uncommitted = " + std::to_string(window) + "\n");
  const std::vector<std::string> argv{OUTPOST_AGENT_BIN, "run", "--config", dir + "/agent.toml"};
  {
    // The first start makes the persistent session; a probe shows it is subscribed.
    pid_t agent = spawn(argv, true);
    for (int i = 0; i < 200 && buffered(buffer) == 0; ++i) {
      publish(port, -1, 1);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    bench::stop_and_measure(agent);
  }
  const uint64_t before = buffered(buffer);
  publish(port, 0, messages);
  const auto t0 = Clock::now();
  pid_t agent = spawn(argv, true);
  AgentRun r;
  while (Clock::now() - t0 < std::chrono::seconds(300)) {
    if (buffered(buffer) >= before + static_cast<uint64_t>(messages)) {
      r.complete = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  r.rate = messages / std::chrono::duration<double>(Clock::now() - t0).count();
  const bench::ProcStats used = bench::stop_and_measure(agent);
  r.cpu_seconds = used.cpu_seconds;
  r.rss_mib = used.peak_rss_mib;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Flags flags("mqtt_bench", argc, argv,
                           {{"messages", "50000"}, {"runs", "3"}, {"windows", "1000,64,8"}});
  const auto messages = static_cast<int>(flags.number("messages"));
  const auto runs = static_cast<int>(flags.number("runs"));
  // The modes: "each" (its window is the one message in the callback), then "grouped" with
  // each max_uncommitted asked for.
  struct Mode {
    std::string commit;
    long window;
    std::vector<double> rate, cpu, rss;
  };
  std::vector<Mode> modes{{"each", 1, {}, {}, {}}};
  {
    const std::string list = flags.text("windows");
    for (size_t at = 0; at < list.size();) {
      size_t end = list.find(',', at);
      if (end == std::string::npos) end = list.size();
      modes.push_back({"grouped", std::stol(list.substr(at, end - at)), {}, {}, {}});
      at = end + 1;
    }
  }
  const std::string dir = std::filesystem::temp_directory_path().string() + "/outpost-mqtt-bench";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const uint16_t port = test::free_port();
  test::write_file(dir + "/mosquitto.conf",
                   "user root\nlistener " + std::to_string(port) +
                       " 127.0.0.1\nallow_anonymous true\npersistence false\n"
                       "max_queued_messages 10000000\n");
  pid_t broker = spawn({"/usr/sbin/mosquitto", "-c", dir + "/mosquitto.conf"}, true);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  std::vector<double> reference;
  bool complete = true;
  for (int i = 0; i < runs; ++i) {
    reference.push_back(reference_run(port, messages));
    std::printf("run %d: mosquitto_sub %.0f msg/s", i + 1, reference.back());
    for (auto& m : modes) {
      const AgentRun r = agent_run(port, messages, dir + "/agent", m.commit, m.window);
      complete = complete && r.complete;
      m.rate.push_back(r.rate);
      m.cpu.push_back(r.cpu_seconds * 1e6 / messages);
      m.rss.push_back(r.rss_mib);
      std::printf("; %s/%ld %.0f msg/s%s", m.commit.c_str(), m.window, r.rate,
                  r.complete ? "" : " (INCOMPLETE)");
    }
    std::printf("\n");
  }
  ::kill(broker, SIGTERM);
  ::waitpid(broker, nullptr, 0);
  std::filesystem::remove_all(dir);
  const double ref = median(reference);
  std::printf("%d QoS 1 messages from a persistent-session backlog; medians of %d runs\n", messages,
              runs);
  std::printf("reference mosquitto_sub: %.0f msg/s\n", ref);
  for (auto& m : modes) {
    std::printf(
        "agent commit=%s max_uncommitted=%ld: %.0f msg/s (%.1f %% of the reference), %.1f us "
        "CPU/msg, peak RSS %.1f MiB, loses at most %ld per kill\n",
        m.commit.c_str(), m.window, median(m.rate), 100 * median(m.rate) / ref, median(m.cpu),
        median(m.rss), m.window);
  }
  std::printf("every message in the buffer: %s\n", complete ? "yes" : "NO");
  return complete ? 0 : 1;
}
