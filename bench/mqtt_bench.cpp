// mqtt_bench: QoS 1 sensor readings from a real mosquitto into the agent's buffer, against
// mosquitto_sub receiving the same stream as the reference limit.
//
// Each run publishes N numbered QoS 1 messages to a persistent session while its subscriber
// is away, then starts the subscriber and times it from its start until it holds all N:
//   - reference: `mosquitto_sub -c -q 1 -C N` (it exits after the N-th message);
//   - agent:     `outpost-agent run` with the MQTT source, until the buffer holds all N,
//                once with sources.mqtt.commit = "each" and once with "grouped".
// Both include process start and connect, which is what a restarting device sees.
//
// Usage: mqtt_bench [--messages N] [--runs R]   (defaults 50000, 3)
// Needs mosquitto and mosquitto-clients (Debian). Figures are medians; the last lines are the
// figures.
#include <mqtt/async_client.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
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
    // Make the persistent session, then leave.
    auto argv = sub;
    argv.insert(argv.end(), {"-W", "1"});
    int status = 0;
    ::waitpid(spawn(argv, true), &status, 0);
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

AgentRun agent_run(uint16_t port, int messages, const std::string& dir, const char* commit) {
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
                       "\"\ncommit = \"" + commit + "\"\n");
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
  const bench::Flags flags("mqtt_bench", argc, argv, {{"messages", "50000"}, {"runs", "3"}});
  const auto messages = static_cast<int>(flags.number("messages"));
  const auto runs = static_cast<int>(flags.number("runs"));
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

  std::vector<double> reference, each, grouped, each_cpu, grouped_cpu, rss;
  bool complete = true;
  for (int i = 0; i < runs; ++i) {
    reference.push_back(reference_run(port, messages));
    AgentRun e = agent_run(port, messages, dir + "/agent", "each");
    AgentRun g = agent_run(port, messages, dir + "/agent", "grouped");
    complete = complete && e.complete && g.complete;
    each.push_back(e.rate);
    grouped.push_back(g.rate);
    each_cpu.push_back(e.cpu_seconds * 1e6 / messages);
    grouped_cpu.push_back(g.cpu_seconds * 1e6 / messages);
    rss.push_back(g.rss_mib);
    std::printf(
        "run %d: mosquitto_sub %.0f msg/s; agent commit=each %.0f msg/s (%s), commit=grouped "
        "%.0f msg/s (%s), peak RSS %.1f MiB\n",
        i + 1, reference.back(), e.rate, e.complete ? "all buffered" : "INCOMPLETE", g.rate,
        g.complete ? "all buffered" : "INCOMPLETE", g.rss_mib);
  }
  ::kill(broker, SIGTERM);
  ::waitpid(broker, nullptr, 0);
  std::filesystem::remove_all(dir);
  const double ref = median(reference);
  std::printf("%d QoS 1 messages from a persistent-session backlog; medians of %d runs\n", messages,
              runs);
  std::printf("reference mosquitto_sub: %.0f msg/s\n", ref);
  std::printf("agent commit=each: %.0f msg/s (%.1f %% of the reference), %.1f us CPU/msg\n",
              median(each), 100 * median(each) / ref, median(each_cpu));
  std::printf("agent commit=grouped: %.0f msg/s (%.1f %% of the reference), %.1f us CPU/msg\n",
              median(grouped), 100 * median(grouped) / ref, median(grouped_cpu));
  std::printf("agent peak RSS: %.1f MiB; every message in the buffer: %s\n", median(rss),
              complete ? "yes" : "NO");
  return complete ? 0 : 1;
}
