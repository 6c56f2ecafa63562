#pragma once
// What every benchmark here needs: its flags, medians of runs, and a child process's own CPU
// time and peak RSS.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace outpost::bench {

// "--name value" flags. `defaults` names every flag with its default; anything else (an
// unknown flag, one without its value, --help) prints the usage and exits 2, so that a
// mistyped flag never starts a long run with the defaults.
class Flags {
 public:
  Flags(const char* program, int argc, char** argv, std::map<std::string, std::string> defaults)
      : values_(std::move(defaults)) {
    for (int i = 1; i < argc; i += 2) {
      const char* arg = argv[i];
      auto it = std::strncmp(arg, "--", 2) == 0 ? values_.find(arg + 2) : values_.end();
      if (it == values_.end() || i + 1 >= argc) {
        std::fprintf(stderr, "%s: %s %s\nusage: %s", program,
                     it == values_.end() ? "unknown flag" : "no value for", arg, program);
        for (const auto& [name, value] : values_) {
          std::fprintf(stderr, " [--%s %s]", name.c_str(), value.c_str());
        }
        std::fprintf(stderr, "\n");
        std::exit(2);
      }
      it->second = argv[i + 1];
    }
  }
  std::string text(const std::string& name) const { return values_.at(name); }
  long long number(const std::string& name) const { return std::stoll(values_.at(name)); }

 private:
  std::map<std::string, std::string> values_;
};

// Starts `command` with /bin/sh (stdout to `out_file`); its pid.
inline pid_t spawn(const std::string& command, const std::string& out_file) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), nullptr);
    ::_exit(127);
  }
  return pid;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct ProcStats {
  double cpu_seconds = 0;
  double peak_rss_mib = 0;
};

// SIGTERM, then the child's own CPU time and peak RSS from wait4().
inline ProcStats stop_and_measure(pid_t pid) {
  ::kill(pid, SIGTERM);
  int status = 0;
  rusage ru{};
  ::wait4(pid, &status, 0, &ru);
  ProcStats s;
  s.cpu_seconds = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                  static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  s.peak_rss_mib = static_cast<double>(ru.ru_maxrss) / 1024.0;
  return s;
}

}  // namespace outpost::bench
