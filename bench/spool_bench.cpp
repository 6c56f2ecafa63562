// spool_bench: how fast the agent's spool source takes a large NDJSON file into its buffer,
// and with how much memory.
//
//   take       a real outpost-agent (its defaults: batch_events 1000, synchronous=FULL) is
//              started on a spool directory holding one --mib MiB NDJSON file of ~200-byte
//              lines; timed from its start until the file is in done/ (every line stored,
//              with its progress). MB/s of the file and events/s.
//   reference  reading the same file line by line (256 KiB reads, no parsing): the disk's and
//              page cache's share of the time.
//   peak RSS   of the agent process (wait4): bounded whatever the file's size.
//
// Each figure is the median of --runs runs (default 3). The last lines are the figures.
// Usage: spool_bench [--mib 1024] [--runs 3] [--dir DIR]
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_support.hpp"
#include "tests/support/process.hpp"

using namespace outpost;
using bench::median;
using steady = std::chrono::steady_clock;

namespace {

// Lines of about 160 bytes, like an order export; returns how many.
uint64_t make_file(const std::string& path, uint64_t bytes) {
  std::ofstream out(path, std::ios::binary);
  std::string line;
  uint64_t written = 0, n = 0;
  while (written < bytes) {
    ++n;
    line = "{\"order_id\":\"north-" + std::to_string(n) + "\",\"store\":\"north-17\",\"sku\":\"A-" +
           std::to_string(n % 9973) + "\",\"qty\":" + std::to_string(1 + n % 5) +
           ",\"price_cents\":" + std::to_string(199 + n % 5000) +
           ",\"currency\":\"EUR\",\"channel\":\"pos\",\"note\":\"nightly export from the "
           "till\"}\n";
    out << line;
    written += line.size();
  }
  return n;
}

double read_reference(const std::string& path) {
  const auto t0 = steady::now();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  std::vector<char> buf(256 * 1024);
  uint64_t lines = 0;
  ssize_t n;
  while ((n = ::read(fd, buf.data(), buf.size())) > 0) {
    for (ssize_t i = 0; i < n; ++i) lines += buf[i] == '\n';
  }
  ::close(fd);
  const double s = std::chrono::duration<double>(steady::now() - t0).count();
  if (lines == 0) std::fprintf(stderr, "spool_bench: empty file\n");
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags("spool_bench", argc, argv,
                     {{"mib", "1024"}, {"runs", "3"}, {"dir", "/var/tmp/outpost-spool-bench"}});
  const uint64_t bytes = static_cast<uint64_t>(flags.number("mib")) << 20;
  const int runs = static_cast<int>(flags.number("runs"));
  const std::string dir = flags.text("dir");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/spool");
  const std::string source = dir + "/orders.ndjson";
  std::printf("making %s (%llu MiB)...\n", source.c_str(),
              static_cast<unsigned long long>(bytes >> 20));
  const uint64_t lines = make_file(source, bytes);
  const uint64_t size = std::filesystem::file_size(source);
  {
    std::ofstream cfg(dir + "/agent.toml");
    cfg << "[agent]\nid = \"bench\"\nhttp_listen = \"127.0.0.1:0\"\n[buffer]\npath = \"" << dir
        << "/buffer.db\"\nmax_bytes = \"64GiB\"\n[sources.spool]\nenabled = true\n"
        << "directory = \"" << dir << "/spool\"\nschema = \"order.v1\"\n";
  }
  std::vector<double> mbs, eps, rss, ref;
  for (int run = 0; run < runs; ++run) {
    for (const char* f : {"/buffer.db", "/buffer.db-wal", "/buffer.db-shm", "/buffer.db.state"}) {
      std::filesystem::remove(dir + f);
    }
    std::filesystem::remove_all(dir + "/spool/done");
    std::filesystem::copy_file(source, dir + "/spool/.orders.ndjson",
                               std::filesystem::copy_options::overwrite_existing);
    ref.push_back(read_reference(dir + "/spool/.orders.ndjson"));
    std::filesystem::rename(dir + "/spool/.orders.ndjson", dir + "/spool/orders.ndjson");
    const auto t0 = steady::now();
    const pid_t agent = ::fork();
    if (agent == 0) test::exec_argv({OUTPOST_AGENT_BIN, "run", "-c", dir + "/agent.toml"});
    while (!std::filesystem::exists(dir + "/spool/done/orders.ndjson")) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const double s = std::chrono::duration<double>(steady::now() - t0).count();
    const auto stats = bench::stop_and_measure(agent);
    mbs.push_back(static_cast<double>(size) / 1e6 / s);
    eps.push_back(static_cast<double>(lines) / s);
    rss.push_back(stats.peak_rss_mib);
    std::printf("run %d: %.1f s, %.1f MB/s, %.0f events/s, peak RSS %.1f MiB\n", run + 1, s,
                mbs.back(), eps.back(), rss.back());
  }
  std::filesystem::remove_all(dir);
  std::printf("file: %.0f MB, %llu lines of %.0f bytes\n", static_cast<double>(size) / 1e6,
              static_cast<unsigned long long>(lines),
              static_cast<double>(size) / static_cast<double>(lines));
  std::printf("reference (read and count lines): %.0f MB/s\n",
              static_cast<double>(size) / 1e6 / median(ref));
  std::printf("take: %.1f MB/s, %.0f events/s (median of %d)\n", median(mbs), median(eps), runs);
  std::printf("peak RSS of the agent: %.1f MiB\n", median(rss));
  return 0;
}
