#pragma once
// What every benchmark here needs: medians of runs, and a child process's own CPU time and
// peak RSS.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <vector>

namespace outpost::bench {

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
