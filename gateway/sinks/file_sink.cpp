#include "gateway/sinks/file_sink.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <atomic>

#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "common/codec/zstd_codec.hpp"
#include "common/errc.hpp"
#include "common/event.hpp"
#include "common/file_lock.hpp"
#include "common/log.hpp"
#include "gateway/sinks/sink.hpp"
#include "proto/event_codec.hpp"
#include "proto/event_view.hpp"

namespace outpost::gateway {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kCompactStateBytes = 8u << 20;

Error io_error(const std::string& what) {
  const int err = errno;
  return make_error(sink_errc_from_errno(err), what + ": " + std::strerror(err));
}

Result<void> write_all(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return io_error("write " + path);
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

struct OpenFile {
  std::string rel;  // relative to the sink directory
  int fd = -1;
  uint64_t size = 0;
  int64_t opened_ns = 0;
  int64_t hour = 0;  // hours since the epoch: files never straddle a partition
};

struct Pending {
  SinkBatch batch;
  SinkCallback done;
};

}  // namespace

struct FileSink::Impl {
  FileSinkOptions opt;
  const Clock& clock;
  std::shared_ptr<spdlog::logger> log = log::get("file-sink");
  codec::Compressor compressor;
  // A group's events by kind, and its dead letters (slot kBadSlot), as written (before
  // compression); kept between groups.
  static constexpr int kBadSlot = kKindCount;
  static constexpr int kSlots = kKindCount + 1;
  std::array<std::string, kSlots> rendered;
  static constexpr size_t kKeepRenderedBytes = 16u << 20;
  fs::path root;
  fs::path state_path;
  int state_fd = -1;
  uint64_t state_bytes = 0;
  std::array<OpenFile, kSlots> files;
  uint64_t file_counter = 0;

  mutable std::mutex mu;
  std::condition_variable wake;
  std::deque<Pending> queue;
  bool stopping = false;
  std::optional<std::string> failure;  // the last write error, until a success
  MarkBook book;  // the high-water marks on disk, and failed batches (pipeline/marks.hpp)
  std::thread thread;

  FileLock dir_lock;  // held for the sink's life (recover() takes it)
  // opt.rotate_bytes and opt.rotate_age_ns as set_rotation() changes them (read by the writer).
  std::atomic<uint64_t> rotate_bytes{0};
  std::atomic<int64_t> rotate_age_ns{0};
  Impl(FileSinkOptions o, const Clock& c)
      : opt(std::move(o)),
        clock(c),
        compressor(opt.zstd_level),
        root(opt.dir),
        rotate_bytes(opt.rotate_bytes),
        rotate_age_ns(opt.rotate_age_ns) {}

  Result<void> recover();
  Result<void> rewrite_state();
  // The open file of a slot (a kind's index, or kBadSlot), rotated when due.
  Result<OpenFile*> file_for(int slot, int64_t now, std::string& state_records);
  void close_file(OpenFile& f, std::string& state_records);
  void run();
  void commit_group(std::vector<Pending>& group);
};

// Reads the state log up to its last complete commit: high-water marks, and the committed
// size of every file still open. Cuts those files back to that size and closes them.
Result<void> FileSink::Impl::recover() {
  std::error_code ec;
  fs::create_directories(root / "_outpost", ec);
  if (ec) {
    return make_error(
        sink_errc_from_errno(ec.value()),
        "file sink: cannot create " + (root / "_outpost").string() + ": " + ec.message());
  }
  // Before anything in the directory is read or written: a second gateway (or the same binary
  // run to "check the config") that rewrote state.log under a running one would roll its
  // marks back at its next restart.
  auto locked = FileLock::acquire(FileSink::lock_path(root.string()),
                                  "the file sink directory " + root.string());
  if (!locked) return locked.error();
  dir_lock = std::move(*locked);
  state_path = root / "_outpost" / "state.log";
  std::unordered_map<std::string, uint64_t> hwm, tentative_hwm;
  std::map<std::string, uint64_t> sizes, tentative_sizes;
  std::ifstream in(state_path);
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // a last line without its newline is torn
    std::istringstream fields(line);
    std::string tag;
    fields >> tag;
    if (tag == "commit") {
      for (auto& [a, s] : tentative_hwm) hwm[a] = std::max(hwm[a], s);
      for (auto& [p, s] : tentative_sizes) {
        if (s == UINT64_MAX) {
          sizes.erase(p);
        } else {
          sizes[p] = s;
        }
      }
      tentative_hwm.clear();
      tentative_sizes.clear();
    } else if (tag == "hwm") {
      uint64_t seq = 0;
      fields >> seq;
      std::string agent;
      std::getline(fields >> std::ws, agent);
      tentative_hwm[agent] = std::max(tentative_hwm[agent], seq);
    } else if (tag == "size") {
      uint64_t bytes = 0;
      std::string rel;
      fields >> bytes >> rel;
      tentative_sizes[rel] = bytes;
    } else if (tag == "closed") {
      std::string rel;
      fields >> rel;
      tentative_sizes[rel] = UINT64_MAX;
    }
  }
  for (auto& [rel, size] : sizes) {
    const fs::path p = root / rel;
    auto actual = fs::file_size(p, ec);
    if (!ec && actual > size) {
      log->warn(
          "file sink: cutting {} back from {} to {} bytes (a group that was never "
          "acknowledged; its agents send it again)",
          p.string(), actual, size);
      fs::resize_file(p, size, ec);
      if (ec) {
        return make_error(sink_errc_from_errno(ec.value()),
                          "file sink: cannot truncate " + p.string() + ": " + ec.message());
      }
    }
  }
  book.reset_marks(std::move(hwm));
  return rewrite_state();
}

// Replaces the state log with one commit holding every high-water mark (open files are all
// closed at this point), atomically: temp file, fsync, rename, fsync the directory.
Result<void> FileSink::Impl::rewrite_state() {
  std::string text;
  for (auto& [agent, seq] : book.marks()) text += "hwm " + std::to_string(seq) + " " + agent + "\n";
  text += "commit\n";
  const std::string tmp = state_path.string() + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return io_error("file sink: open " + tmp);
  auto r = write_all(fd, text, tmp);
  if (r && ::fsync(fd) != 0) r = io_error("file sink: fsync " + tmp);
  ::close(fd);
  if (!r) return r;
  if (::rename(tmp.c_str(), state_path.c_str()) != 0) return io_error("file sink: rename " + tmp);
  fsync_dir(state_path.parent_path());
  if (state_fd >= 0) ::close(state_fd);
  state_fd = ::open(state_path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (state_fd < 0) return io_error("file sink: open " + state_path.string());
  state_bytes = text.size();
  return {};
}

void FileSink::Impl::close_file(OpenFile& f, std::string& state_records) {
  if (f.fd < 0) return;
  ::fsync(f.fd);
  ::close(f.fd);
  f.fd = -1;
  state_records += "closed " + f.rel + "\n";
}

Result<OpenFile*> FileSink::Impl::file_for(int slot, int64_t now, std::string& state_records) {
  OpenFile& f = files[static_cast<size_t>(slot)];
  const std::string slot_name =
      slot == kBadSlot ? "bad" : std::string(kind_name(static_cast<EventKind>(slot + 1)));
  const int64_t hour = now / 3'600'000'000'000;
  if (f.fd >= 0 && f.size < rotate_bytes && now - f.opened_ns < rotate_age_ns && f.hour == hour) {
    return &f;
  }
  close_file(f, state_records);
  std::time_t secs = static_cast<std::time_t>(now / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char part[64];
  std::snprintf(part, sizeof part, "dt=%04d-%02d-%02d/hour=%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour);
  const fs::path dir = root / slot_name / part;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return make_error(sink_errc_from_errno(ec.value()),
                      "file sink: cannot create " + dir.string() + ": " + ec.message());
  }
  char name[96];
  std::snprintf(name, sizeof name, "part-%lld-%llu.%s.zst", static_cast<long long>(now / 1'000'000),
                static_cast<unsigned long long>(++file_counter),
                opt.protobuf && slot != kBadSlot ? "pb" : "ndjson");
  const fs::path path = dir / name;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("file sink: create " + path.string());
  fsync_dir(dir);
  f = OpenFile{fs::relative(path, root).string(), fd, 0, now, hour};
  return &f;
}

void FileSink::Impl::run() {
  std::unique_lock lock(mu);
  while (true) {
    if (queue.empty() && !stopping) wake.wait_for(lock, std::chrono::seconds(1));
    if (queue.empty() && stopping) break;
    std::vector<Pending> group;
    size_t events = 0;
    while (!queue.empty() && (group.empty() || events < opt.group_max_events)) {
      events += queue.front().batch.events.size();
      group.push_back(std::move(queue.front()));
      queue.pop_front();
    }
    lock.unlock();
    commit_group(group);
    lock.lock();
  }
  lock.unlock();
  std::string records;
  for (OpenFile& f : files) close_file(f, records);
  if (!records.empty() && state_fd >= 0) {
    records += "commit\n";
    (void)write_all(state_fd, records, state_path.string());
    ::fdatasync(state_fd);
  }
  if (state_fd >= 0) ::close(state_fd);
}

void FileSink::Impl::commit_group(std::vector<Pending>& group) {
  const int64_t now = clock.now_ns();
  std::string records;
  // Rotate by age even when nothing is written, so that files close on time.
  for (OpenFile& f : files) {
    if (f.fd >= 0 && (now - f.opened_ns >= rotate_age_ns || f.size >= rotate_bytes ||
                      f.hour != now / 3'600'000'000'000)) {
      close_file(f, records);
    }
  }
  if (group.empty() && records.empty()) return;
  std::vector<Result<SinkResult>> results(group.size(), SinkResult{});
  MarkBook::Group marks(book);
  for (std::string& d : rendered) {
    if (d.capacity() > kKeepRenderedBytes) d = std::string();
    d.clear();  // the capacity stays: no regrowing, copying and faulting in per group
  }
  for (size_t i = 0; i < group.size(); ++i) {
    SinkBatch& b = group[i].batch;
    const MarkDecision decision = marks.admit(b);
    if (decision.refuse) {
      results[i] = make_error(sink_errc::gap, *decision.refuse);
      continue;
    }
    const SinkResult r = write_above_mark(b, decision, [&](const wire::EventView& e) {
      if (b.bad(e.index)) {  // the dead-letter record, NDJSON whatever the format
        rendered[kBadSlot] += b.dead_letters[e.index];
        rendered[kBadSlot] += '\n';
        return true;
      }
      auto kind = kind_from_number(e.kind).value_or(EventKind::json);
      std::string& out = rendered[kind_index(kind)];
      if (opt.protobuf) {
        proto::append_restamped_delimited(out, e.bytes, b.agent_id);
      } else {
        proto::append_event_json(out, e.bytes, b.agent_id, /*stamped=*/true);
        out += '\n';
      }
      return true;
    });
    if (results[i]) {
      results[i] = r;
      marks.written(b, decision);
    }
  }

  Result<void> outcome;
  std::vector<std::pair<OpenFile*, uint64_t>> touched;  // with the size before this group
  for (int slot = 0; slot < kSlots; ++slot) {
    const std::string& bytes = rendered[static_cast<size_t>(slot)];
    if (bytes.empty()) continue;
    auto file = file_for(slot, now, records);
    if (!file) {
      outcome = file.error();
      break;
    }
    auto frame = compressor.compress(bytes);
    if (!frame) {
      outcome = frame.error();
      break;
    }
    OpenFile* f = *file;
    touched.emplace_back(f, f->size);
    outcome = write_all(f->fd, *frame, f->rel);
    if (!outcome) break;
    f->size += frame->size();
  }
  for (auto& [f, before] : touched) {
    if (outcome && ::fdatasync(f->fd) != 0) outcome = io_error("file sink: fsync " + f->rel);
  }
  if (outcome && (!marks.moved().empty() || !touched.empty() || !records.empty())) {
    for (auto& [agent, seq] : marks.moved())
      records += "hwm " + std::to_string(seq) + " " + agent + "\n";
    for (auto& [f, before] : touched) {
      records += "size " + std::to_string(f->size) + " " + f->rel + "\n";
    }
    records += "commit\n";
    outcome = write_all(state_fd, records, state_path.string());
    if (outcome && ::fdatasync(state_fd) != 0) outcome = io_error("file sink: fsync state log");
    if (outcome) {
      state_bytes += records.size();
    } else if (::ftruncate(state_fd, static_cast<off_t>(state_bytes)) != 0) {
      // A torn record would stick to the next one; say so, recovery stops at it.
      log->error("file sink: cannot cut the state log back after a failed write");
    }
  }
  if (!outcome) {
    // Nothing of this group counts: cut the files back so that a retry does not double it.
    for (auto& [f, before] : touched) {
      if (::ftruncate(f->fd, static_cast<off_t>(before)) == 0) f->size = before;
    }
    log->error("file sink: {}; the group's {} batches are answered retry-later",
               outcome.error().describe(), group.size());
    std::vector<const SinkBatch*> failed;
    for (const Pending& p : group) failed.push_back(&p.batch);
    book.failed(failed);
  } else {
    marks.commit();
    if (state_bytes > kCompactStateBytes) {
      // The compacted log holds no file sizes, so every file is closed first.
      std::string closing;
      for (OpenFile& f : files) close_file(f, closing);
      if (auto r = rewrite_state(); !r) log->error("file sink: {}", r.error().describe());
    }
  }
  {
    std::lock_guard lock(mu);
    // Not ready from a failed write until a write succeeds: a group that wrote nothing
    // (duplicates, or batches refused for a gap) says nothing about the disk.
    if (!outcome) {
      failure = describe_sink_error(outcome.error());
    } else if (!touched.empty()) {
      failure.reset();
    }
  }
  for (size_t i = 0; i < group.size(); ++i) {
    Result<SinkResult> r = outcome ? results[i] : Result<SinkResult>(outcome.error());
    try {
      group[i].done(r);
    } catch (const std::exception& e) {
      log->error("a sink callback threw: {}", e.what());
    }
  }
}

void FileSink::set_rotation(uint64_t rotate_bytes, int64_t rotate_age_ns) {
  impl_->rotate_bytes = rotate_bytes;
  impl_->rotate_age_ns = rotate_age_ns;
}

std::string FileSink::lock_path(const std::string& dir) {
  return (fs::path(dir) / "_outpost" / "lock").string();
}

Result<std::unique_ptr<FileSink>> FileSink::open(FileSinkOptions options, const Clock& clock) {
  if (options.dir.empty()) {
    return make_error(common_errc::config_invalid, "sink.file.dir is empty: set a directory");
  }
  auto impl = std::make_unique<Impl>(std::move(options), clock);
  if (auto r = impl->recover(); !r) return r.error();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<FileSink>(new FileSink(std::move(impl)));
}

FileSink::FileSink(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FileSink::~FileSink() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->thread.join();
}

void FileSink::write(SinkBatch batch, SinkCallback done) {
  std::optional<Error> refused;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopping) {
      refused = make_error(sink_errc::unavailable, "file sink is shutting down");
    } else if (impl_->queue.size() >= impl_->opt.queue_max_batches) {
      refused = make_error(sink_errc::queue_full, "file sink queue is full (" +
                                                      std::to_string(impl_->queue.size()) +
                                                      " batches wait for the disk)");
    } else {
      impl_->queue.push_back({std::move(batch), std::move(done)});
    }
  }
  if (refused) {
    impl_->book.failed(batch.mark_key(), batch.first_seq);  // nothing of its agent overtakes it
    done(*refused);
    return;
  }
  impl_->wake.notify_one();
}

void FileSink::session_started(const std::string& agent_id) {
  impl_->book.session_started(agent_id);  // the new session resends from its last ack
}

std::optional<std::string> FileSink::not_ready_reason() const {
  std::lock_guard lock(impl_->mu);
  return impl_->failure;
}

uint64_t FileSink::high_water(const std::string& agent_id) const {
  return impl_->book.mark(agent_id).value_or(0);
}

}  // namespace outpost::gateway
