#include "agent/sources/spool/spool_source.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <future>
#include <set>
#include <thread>
#include <vector>

#include "common/errc.hpp"
#include "common/log.hpp"
#include "outpost/v1/event.pb.h"

namespace outpost::agent {

namespace {

constexpr const char* kKeyPrefix = "spool:";
constexpr const char* kFinished = "done";

std::string errno_text() { return std::strerror(errno); }

int64_t mtime_ns(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// A file's identity: what it is, not what it is called (a rename keeps it, a rewrite does not).
std::string identity_key(const struct stat& st) {
  return std::string(kKeyPrefix) + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) +
         ":" + std::to_string(st.st_size) + ":" + std::to_string(mtime_ns(st));
}

bool refused_for_room(const Error& e) {
  return e.code == buffer_errc::full || e.code == buffer_errc::disk_full ||
         e.code == buffer_errc::queue_full || e.code == buffer_errc::busy;
}

}  // namespace

struct SpoolSource::Impl {
  SpoolSourceOptions opt;
  Buffer& buffer;
  std::shared_ptr<spdlog::logger> log = log::get("spool");
  SpoolSourceCounters counters;
  int inotify_fd = -1;
  int stop_fd = -1;
  std::atomic<bool> stopping{false};
  std::set<std::string> given_up;  // identities that could not be moved to failed/ this run
  std::thread thread;

  Impl(SpoolSourceOptions o, Buffer& b) : opt(std::move(o)), buffer(b) {}
  ~Impl() {
    if (inotify_fd >= 0) ::close(inotify_fd);
    if (stop_fd >= 0) ::close(stop_fd);
  }

  std::string path(const std::string& name) const { return opt.directory + "/" + name; }

  void run() {
    bool first = true;
    while (!stopping) {
      auto names = list();
      counters.pending_files = names.size();
      if (first) forget_stale(names);
      first = false;
      bool progressed = false;
      for (const auto& [name, st] : names) {
        if (stopping) return;
        progressed = take(name) || progressed;
      }
      if (!progressed && !wait(opt.rescan_interval_ns)) return;
    }
  }

  // Waits until the directory changes, `ns` pass, or the source stops (false).
  bool wait(int64_t ns) {
    pollfd fds[2] = {{stop_fd, POLLIN, 0}, {inotify_fd, POLLIN, 0}};
    const int n = inotify_fd >= 0 ? 2 : 1;
    const int ms = static_cast<int>(std::min<int64_t>(ns / 1'000'000, 3'600'000));
    int rc = ::poll(fds, n, ms);
    if (stopping) return false;
    if (rc > 0 && n == 2 && (fds[1].revents & POLLIN)) {
      char drain[4096];
      while (::read(inotify_fd, drain, sizeof drain) > 0) {
      }
    }
    return true;
  }

  // The regular files to take, oldest first; names starting with '.' are still being written.
  std::vector<std::pair<std::string, struct stat>> list() {
    std::vector<std::pair<std::string, struct stat>> out;
    DIR* d = ::opendir(opt.directory.c_str());
    if (d == nullptr) {
      log->error("spool directory {}: {}", opt.directory, errno_text());
      return out;
    }
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      struct stat st {};
      if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (!S_ISREG(st.st_mode)) continue;
      if (given_up.contains(identity_key(st))) continue;
      out.emplace_back(e->d_name, st);
    }
    ::closedir(d);
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
      const int64_t ta = mtime_ns(a.second), tb = mtime_ns(b.second);
      return ta != tb ? ta < tb : a.first < b.first;
    });
    return out;
  }

  // At start: progress rows of files no longer here (moved to done/ or failed/ just before a
  // kill) are removed.
  void forget_stale(const std::vector<std::pair<std::string, struct stat>>& names) {
    auto rows = buffer.read_progress(kKeyPrefix);
    if (!rows) {
      log->warn("{}", rows.error().describe());
      return;
    }
    std::set<std::string> present;
    for (const auto& [name, st] : names) present.insert(identity_key(st));
    for (const SourceProgress& p : *rows) {
      if (present.contains(p.key)) continue;
      if (auto r = buffer.erase_progress(p.key); !r) log->warn("{}", r.error().describe());
    }
  }

  // One file, as far as it goes; true when anything happened to it.
  bool take(const std::string& name) {
    const std::string file = path(name);
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      if (errno == ENOENT) return false;  // taken away meanwhile
      return fail(name, "", "cannot be opened: " + errno_text());
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return false;
    }
    const std::string key = identity_key(st);
    auto rows = buffer.read_progress(key);
    if (!rows) {
      ::close(fd);
      log->warn("{}: {}", name, rows.error().describe());
      return false;
    }
    uint64_t offset = 0, line = 0;
    bool known = false;
    for (const SourceProgress& p : *rows) {
      if (p.key != key) continue;
      known = true;
      if (p.value == kFinished) {
        ::close(fd);
        return finish(name, key);
      }
      char* rest = nullptr;
      offset = std::strtoull(p.value.c_str(), &rest, 10);
      line = std::strtoull(rest, nullptr, 10);
    }
    const auto format = format_of(opt.format, name);
    if (!format) {
      ::close(fd);
      return fail(name, key,
                  "the format cannot be told from the name: name it .ndjson, .jsonl, .csv or "
                  ".json, or set sources.spool.format");
    }
    SpoolReader reader(fd, *format, opt.limits);
    if (!known) {
      // Checked whole first: a malformed file stores nothing.
      while (true) {
        auto next = reader.next();
        if (!next) return fail(name, key, next.error().message);
        if (!*next) break;
      }
      if (auto r = reader.resume(0, 0); !r) return fail(name, key, r.error().message);
      log->info("taking {} ({} bytes)", name, st.st_size);
    } else {
      if (auto r = reader.resume(offset, line); !r) return fail(name, key, r.error().message);
      log->info("resuming {} at byte {} (line {})", name, offset, line);
    }
    const int64_t event_time = mtime_ns(st);
    bool at_end = false;
    while (!at_end) {
      std::vector<NewEvent> events;
      uint64_t bytes = 0;
      const uint64_t from = reader.offset();
      while (events.size() < opt.batch_events && bytes < opt.batch_bytes) {
        auto next = reader.next();
        if (!next) {
          // It passed the check: the file changed under the source (not dropped atomically).
          return fail(name, key,
                      next.error().message + " (the file changed after it was checked; what " +
                          "came before that line is stored)");
        }
        if (!*next) {
          at_end = true;
          break;
        }
        v1::Event e;
        e.set_kind(v1::EVENT_KIND_JSON);
        e.set_schema(opt.schema);
        e.set_event_time(event_time);
        e.set_json(std::move(**next));
        auto& attributes = *e.mutable_attributes();
        attributes["spool.file"] = name;
        if (*format != SpoolFormat::whole_file) {
          attributes["spool.line"] = std::to_string(reader.record_line());
        }
        NewEvent ne;
        ne.kind = EventKind::json;
        ne.priority = opt.priority;
        ne.event_time_ns = event_time;
        ne.body = e.SerializeAsString();
        bytes += ne.body.size();
        events.push_back(std::move(ne));
      }
      const std::string where =
          at_end ? std::string(kFinished)
                 : std::to_string(reader.offset()) + " " + std::to_string(reader.line());
      const size_t count = events.size();
      if (!store(std::move(events), SourceProgress{key, where})) return true;  // stopping
      counters.events += count;
      counters.bytes += reader.offset() - from;
    }
    return finish(name, key);
  }

  // Stores `events` with the progress, waiting while the buffer refuses; false when stopping.
  bool store(std::vector<NewEvent> events, const SourceProgress& progress) {
    int64_t delay = opt.retry_min_ns;
    while (true) {
      std::promise<Result<AppendResult>> done;
      auto result = done.get_future();
      buffer.append_with_progress(events, progress,
                                  [&done](const Result<AppendResult>& r) { done.set_value(r); });
      auto r = result.get();
      if (r) return true;
      if (r.error().code == buffer_errc::closed) return false;
      if (refused_for_room(r.error())) {
        if (counters.waits++ % 100 == 0) {
          log->info("the buffer refuses ({}); waiting", r.error().describe());
        }
      } else {
        log->error("{}; trying again", r.error().describe());
      }
      if (!sleep(delay)) return false;
      delay = std::min(delay * 2, opt.retry_max_ns);
    }
  }

  bool sleep(int64_t ns) {
    pollfd fd{stop_fd, POLLIN, 0};
    ::poll(&fd, 1, static_cast<int>(ns / 1'000'000));
    return !stopping;
  }

  // `dir`/name, or name.1, name.2... when taken.
  std::string free_name(const std::string& dir, const std::string& name) {
    std::string target = opt.directory + "/" + dir + "/" + name;
    struct stat st {};
    for (int i = 1; ::lstat(target.c_str(), &st) == 0; ++i) {
      target = opt.directory + "/" + dir + "/" + name + "." + std::to_string(i);
    }
    return target;
  }

  bool finish(const std::string& name, const std::string& key) {
    const std::string file = path(name);
    if (opt.delete_done) {
      if (::unlink(file.c_str()) != 0 && errno != ENOENT) {
        log->error("cannot delete {}: {}", file, errno_text());
        given_up.insert(key);
        return false;
      }
    } else if (::rename(file.c_str(), free_name("done", name).c_str()) != 0) {
      log->error("cannot move {} to done/: {}", file, errno_text());
      given_up.insert(key);
      return false;
    }
    if (auto r = buffer.erase_progress(key); !r) {
      log->warn("{} (removed at the next start)", r.error().describe());
    }
    counters.files_done++;
    log->info("{} done", name);
    return true;
  }

  // Moves the file to failed/ with a .reason file; it is not tried again.
  bool fail(const std::string& name, const std::string& key, const std::string& reason) {
    counters.files_failed++;
    log->warn("{} failed: {}", name, reason);
    const std::string target = free_name("failed", name);
    const std::string tmp = target + ".reason.tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      const std::string text = reason + "\n";
      bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
      ok = ::fsync(fd) == 0 && ok;
      ::close(fd);
      if (ok) ok = ::rename(tmp.c_str(), (target + ".reason").c_str()) == 0;
      if (!ok) log->error("cannot write {}.reason: {}", target, errno_text());
    }
    if (::rename(path(name).c_str(), target.c_str()) != 0) {
      log->error("cannot move {} to failed/: {}; skipped until the agent restarts", path(name),
                 errno_text());
      if (!key.empty()) given_up.insert(key);
      return false;
    }
    if (!key.empty()) (void)buffer.erase_progress(key);
    return true;
  }
};

Result<std::unique_ptr<SpoolSource>> SpoolSource::start(SpoolSourceOptions options,
                                                        Buffer& buffer) {
  auto impl = std::make_unique<Impl>(std::move(options), buffer);
  const std::string& dir = impl->opt.directory;
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return make_error(common_errc::config_invalid,
                      "sources.spool.directory = \"" + dir + "\": " + errno_text());
  }
  if (!S_ISDIR(st.st_mode)) {
    return make_error(common_errc::config_invalid,
                      "sources.spool.directory = \"" + dir + "\" is not a directory");
  }
  for (const char* sub : {"done", "failed"}) {
    const std::string p = dir + "/" + sub;
    if (::mkdir(p.c_str(), 0750) != 0 && errno != EEXIST) {
      return make_error(common_errc::config_invalid,
                        "sources.spool.directory: cannot create " + p + ": " + errno_text());
    }
  }
  impl->stop_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (impl->stop_fd < 0) {
    return make_error(common_errc::config_invalid, "spool source: eventfd: " + errno_text());
  }
  impl->inotify_fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (impl->inotify_fd >= 0 &&
      ::inotify_add_watch(impl->inotify_fd, dir.c_str(), IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
    ::close(impl->inotify_fd);
    impl->inotify_fd = -1;
  }
  if (impl->inotify_fd < 0) {
    impl->log->warn("inotify unavailable ({}); rescanning {} every {} ms", errno_text(), dir,
                    impl->opt.rescan_interval_ns / 1'000'000);
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<SpoolSource>(new SpoolSource(std::move(impl)));
}

SpoolSource::SpoolSource(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SpoolSource::~SpoolSource() {
  impl_->stopping = true;
  const uint64_t one = 1;
  (void)::write(impl_->stop_fd, &one, sizeof one);
  impl_->thread.join();
}

const SpoolSourceCounters& SpoolSource::counters() const { return impl_->counters; }

void SpoolSource::append_metrics(std::string& out) const {
  const SpoolSourceCounters& c = impl_->counters;
  out += "# HELP outpost_agent_spool_files_total Spool files finished, by result.\n";
  out += "# TYPE outpost_agent_spool_files_total counter\n";
  out += "outpost_agent_spool_files_total{result=\"done\"} " + std::to_string(c.files_done) + "\n";
  out +=
      "outpost_agent_spool_files_total{result=\"failed\"} " + std::to_string(c.files_failed) + "\n";
  out += "# HELP outpost_agent_spool_events_total Events the spool source stored.\n";
  out += "# TYPE outpost_agent_spool_events_total counter\n";
  out += "outpost_agent_spool_events_total " + std::to_string(c.events) + "\n";
  out += "# HELP outpost_agent_spool_bytes_total Bytes of spool files stored as events.\n";
  out += "# TYPE outpost_agent_spool_bytes_total counter\n";
  out += "outpost_agent_spool_bytes_total " + std::to_string(c.bytes) + "\n";
  out +=
      "# HELP outpost_agent_spool_buffer_waits_total Times the buffer refused the spool source "
      "(full) and it waited.\n";
  out += "# TYPE outpost_agent_spool_buffer_waits_total counter\n";
  out += "outpost_agent_spool_buffer_waits_total " + std::to_string(c.waits) + "\n";
  out +=
      "# HELP outpost_agent_spool_pending_files Files in the spool directory at the last scan.\n";
  out += "# TYPE outpost_agent_spool_pending_files gauge\n";
  out += "outpost_agent_spool_pending_files " + std::to_string(c.pending_files) + "\n";
}

}  // namespace outpost::agent
