// `outpost-agent buffer stats|peek|export|import|purge|verify`.
// The read verbs use BufferInspector (read-only, safe beside a running agent); import and
// purge go through SqliteBuffer, whose writer the running agent notices (docs/buffer.md).
#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include "agent/buffer/buffer_inspector.hpp"
#include "agent/buffer/sqlite_buffer.hpp"
#include "agent/cli/cli.hpp"
#include "agent/cli/commands.hpp"
#include "agent/config.hpp"
#include "common/config.hpp"
#include "common/errc.hpp"
#include "common/json/json_writer.hpp"
#include "common/log.hpp"
#include "common/units.hpp"
#include "common/utf8.hpp"
#include "proto/event_codec.hpp"

namespace outpost::agent::cli {
namespace {

int fail(const Error& e) {
  std::cerr << "outpost-agent: " << e.describe() << "\n";
  return e.code == buffer_errc::newer_schema ? kExitUsage : kExitError;
}

std::string age(int64_t now, int64_t then) {
  return then > now ? "in the future"
                    : format_duration_ns((now - then) / 1'000'000'000 * 1'000'000'000) + " ago";
}

// Pending events by the agent they belong to: this agent's own, and each device a relaying
// agent keeps events of (proto::relayed_identity).
struct OriginCount {
  uint64_t events = 0, bytes = 0;
};
using Origins = std::map<std::string, OriginCount>;

Result<Origins> pending_by_origin(BufferInspector& inspector, const std::string& own) {
  Origins origins;
  ScanFilter as_stored;
  as_stored.open_sealed = false;  // the first bytes say whose; sealed ones are the agent's own
  auto n = inspector.scan(as_stored, [&](const StoredEvent& e) {
    const auto relayed = proto::relayed_identity(e.body);
    OriginCount& c = origins[relayed ? std::string(relayed->agent_id) : own];
    ++c.events;
    c.bytes += e.body.size();
    return true;
  });
  if (!n) return n.error();
  return origins;
}

void stats_json(const BufferStats& s, const Origins& origins, const std::string& path) {
  JsonWriter w;
  w.begin_object();
  w.key("path").value(path);
  w.key("agent_id").value(s.agent_id);
  w.key("schema_version").value(s.schema_version);
  w.key("file_bytes").value(s.file_bytes);
  w.key("pending_events").value(s.pending_events);
  w.key("pending_bytes").value(s.pending_bytes);
  w.key("oldest_event_time_ns");
  s.oldest_event_time_ns ? w.value(*s.oldest_event_time_ns) : w.null();
  w.key("newest_event_time_ns");
  s.newest_event_time_ns ? w.value(*s.newest_event_time_ns) : w.null();
  w.key("acked_seq").value(s.acked_seq);
  w.key("next_seq").value(s.next_seq);
  w.key("corrupt_recoveries").value(s.corrupt_recoveries);
  w.key("corrupt_lost").value(s.corrupt_lost);
  w.key("duplicates").value(s.duplicates);
  w.key("quarantined_total").value(s.quarantined_total);
  w.key("quarantine_rows").value(s.quarantine_rows);
  w.key("groups").begin_array();
  for (const GroupStats& g : s.groups) {
    w.begin_object();
    w.key("kind").value(kind_name(g.kind));
    w.key("priority").value(g.priority);
    w.key("events").value(g.events);
    w.key("bytes").value(g.bytes);
    w.key("oldest_event_time_ns").value(g.oldest_event_time_ns);
    w.key("newest_event_time_ns").value(g.newest_event_time_ns);
    w.end_object();
  }
  w.end_array();
  w.key("origins").begin_array();
  for (const auto& [agent, c] : origins) {
    w.begin_object();
    w.key("agent_id").value(agent);
    w.key("events").value(c.events);
    w.key("bytes").value(c.bytes);
    w.end_object();
  }
  w.end_array();
  w.key("origin_dropped").begin_array();
  for (const OriginDropCount& d : s.origin_dropped) {
    w.begin_object();
    w.key("agent_id").value(d.agent_id);
    w.key("reason").value(drop_reason_name(d.reason));
    w.key("count").value(d.count);
    w.end_object();
  }
  w.end_array();
  w.key("dropped").begin_array();
  for (const DropCount& d : s.dropped) {
    w.begin_object();
    w.key("reason").value(drop_reason_name(d.reason));
    w.key("kind").value(kind_name(d.kind));
    w.key("count").value(d.count);
    w.end_object();
  }
  w.end_array();
  w.end_object();
  std::cout << w.str() << "\n";
}

void stats_table(const BufferStats& s, const Origins& origins, const std::string& path) {
  const int64_t now = SystemClock().now_ns();
  std::printf("buffer          %s\n", path.c_str());
  std::printf("agent id        %s\n", s.agent_id.c_str());
  std::printf("schema version  %u\n", s.schema_version);
  std::printf("file size       %s\n", format_bytes(s.file_bytes).c_str());
  std::printf("pending         %llu events, %s\n",
              static_cast<unsigned long long>(s.pending_events),
              format_bytes(s.pending_bytes).c_str());
  if (s.oldest_event_time_ns) {
    std::printf("oldest event    %s (%s)\n", format_time_ns(*s.oldest_event_time_ns).c_str(),
                age(now, *s.oldest_event_time_ns).c_str());
    std::printf("newest event    %s (%s)\n", format_time_ns(*s.newest_event_time_ns).c_str(),
                age(now, *s.newest_event_time_ns).c_str());
  }
  std::printf("last acked seq  %llu\n", static_cast<unsigned long long>(s.acked_seq));
  std::printf("next seq        %llu\n", static_cast<unsigned long long>(s.next_seq));
  std::printf("corrupt files   %llu moved aside, %llu pending events in them not salvaged\n",
              static_cast<unsigned long long>(s.corrupt_recoveries),
              static_cast<unsigned long long>(s.corrupt_lost));
  std::printf("duplicates      %llu not stored again\n",
              static_cast<unsigned long long>(s.duplicates));
  std::printf("quarantined     %llu kept of %llu ever (buffer quarantine)\n",
              static_cast<unsigned long long>(s.quarantine_rows),
              static_cast<unsigned long long>(s.quarantined_total));
  if (!s.groups.empty()) {
    std::printf("\n%-8s %8s %12s %12s\n", "KIND", "PRIORITY", "EVENTS", "BYTES");
    for (const GroupStats& g : s.groups) {
      std::printf("%-8s %8d %12llu %12s\n", std::string(kind_name(g.kind)).c_str(), g.priority,
                  static_cast<unsigned long long>(g.events), format_bytes(g.bytes).c_str());
    }
  }
  if (origins.size() > 1 || (origins.size() == 1 && origins.begin()->first != s.agent_id)) {
    std::printf("\n%-24s %12s %12s\n", "ORIGIN", "EVENTS", "BYTES");  // a relaying agent's
    for (const auto& [agent, c] : origins) {
      std::printf("%-24s %12llu %12s\n", agent.c_str(), static_cast<unsigned long long>(c.events),
                  format_bytes(c.bytes).c_str());
    }
  }
  std::printf("\n%-14s %-8s %12s\n", "DROPPED", "KIND", "EVENTS");
  if (s.dropped.empty()) std::printf("%-14s %-8s %12d\n", "(none)", "-", 0);
  for (const DropCount& d : s.dropped) {
    std::printf("%-14s %-8s %12llu\n", std::string(drop_reason_name(d.reason)).c_str(),
                std::string(kind_name(d.kind)).c_str(), static_cast<unsigned long long>(d.count));
  }
  if (!s.origin_dropped.empty()) {
    std::printf("\n%-24s %-14s %12s\n", "DROPPED OF", "REASON", "EVENTS");  // relayed devices
    for (const OriginDropCount& d : s.origin_dropped) {
      std::printf("%-24s %-14s %12llu\n", d.agent_id.c_str(),
                  std::string(drop_reason_name(d.reason)).c_str(),
                  static_cast<unsigned long long>(d.count));
    }
  }
}

}  // namespace

Result<std::string> buffer_path_from_config(const std::string& config_path) {
  auto doc = ConfigDoc::parse_file(config_path);
  if (!doc) {
    return make_error(outpost::common_errc::config_unreadable,
                      "no --path given, and the configuration " + config_path +
                          " cannot be read (" + doc.error().message +
                          "): name the buffer with --path FILE, or its configuration with "
                          "--config FILE");
  }
  return doc->string("buffer.path", "/var/lib/outpost/buffer.db");
}

// The keys that open sealed events (docs/buffer.md, "Encryption at rest"): the --key-file
// ones, else those of the configuration (buffer.key_file, buffer.old_key_files); none when the
// configuration cannot be read. `sealing`: as the agent seals (import).
Result<BufferEncryption> keys_for(const BufferOptionsCli& o, bool sealing) {
  BufferEncryption e;
  if (!o.key_files.empty() && !sealing) {
    for (const std::string& path : o.key_files) {
      auto k = tls::AeadKey::read_file(path);
      if (!k) return k.error();
      e.keys.push_back(*k);
    }
    return e;
  }
  auto doc = ConfigDoc::parse_file(o.config);
  if (!doc) return e;
  auto loaded = load_buffer_encryption(*doc);
  if (!loaded) return loaded.error();
  if (!sealing) loaded->seal = false;
  return *loaded;
}

int buffer_stats(const BufferOptionsCli& o) {
  auto inspector = BufferInspector::open(o.path);
  if (!inspector) return fail(inspector.error());
  auto stats = inspector->stats();
  if (!stats) return fail(stats.error());
  auto origins = pending_by_origin(*inspector, stats->agent_id);
  if (!origins) return fail(origins.error());
  o.json ? stats_json(*stats, *origins, o.path) : stats_table(*stats, *origins, o.path);
  return kExitOk;
}

int buffer_peek(const BufferOptionsCli& o) {
  auto inspector = BufferInspector::open(o.path);
  if (!inspector) return fail(inspector.error());
  auto keys = keys_for(o, false);
  if (!keys) return fail(keys.error());
  inspector->use_keys(*keys);
  const std::string agent_id = inspector->agent_id();
  ScanFilter filter{o.kind ? kind_from_name(*o.kind) : std::nullopt, o.since,
                    static_cast<size_t>(std::min<uint64_t>(o.limit, SIZE_MAX))};
  auto n = inspector->scan(filter, [&](const StoredEvent& e) {
    auto json = proto::event_to_json(proto::stamp(e.body, agent_id, e.seq, e.collected_at_ns));
    if (o.json) {
      std::cout << (json ? *json
                         : "{\"seq\":\"" + std::to_string(e.seq) +
                               "\",\"error\":" + "\"does not decode\"}")
                << "\n";
    } else {
      std::cout << "#" << e.seq << "  " << kind_name(e.kind) << "  priority " << e.priority << "  "
                << format_time_ns(e.event_time_ns) << "\n  "
                << (json ? *json : "(does not decode: " + json.error().describe() + ")") << "\n";
    }
    return true;
  });
  if (!n) return fail(n.error());
  if (!o.json && *n == 0) std::cout << "(no pending events)\n";
  return kExitOk;
}

int buffer_export(const BufferOptionsCli& o) {
  auto inspector = BufferInspector::open(o.path);
  if (!inspector) return fail(inspector.error());
  auto keys = keys_for(o, false);
  if (!keys) return fail(keys.error());
  inspector->use_keys(*keys);
  const std::string agent_id = inspector->agent_id();
  ScanFilter filter{o.kind ? kind_from_name(*o.kind) : std::nullopt, 0,
                    std::numeric_limits<size_t>::max()};
  std::optional<Error> bad;
  std::string out;
  auto n = inspector->scan(filter, [&](const StoredEvent& e) {
    std::string full = proto::stamp(e.body, agent_id, e.seq, e.collected_at_ns);
    if (o.format == "protobuf") {
      proto::append_delimited(out, full);
    } else {
      auto json = proto::event_to_json(full);
      if (!json) {
        bad = make_error(json.error().code,
                         "event seq " + std::to_string(e.seq) + ": " + json.error().describe());
        return false;
      }
      out += *json;
      out.push_back('\n');
    }
    if (out.size() > (1u << 20)) {
      std::cout.write(out.data(), static_cast<std::streamsize>(out.size()));
      out.clear();
    }
    return true;
  });
  std::cout.write(out.data(), static_cast<std::streamsize>(out.size()));
  std::cout.flush();
  if (!n) return fail(n.error());
  if (bad) return fail(*bad);
  std::cerr << "exported " << *n << " events\n";
  return kExitOk;
}

int buffer_import(const BufferOptionsCli& o) {
  (void)log::init("warn");
  // Read the first event before opening, so that a new file can take its agent id.
  std::vector<NewEvent> batch;
  std::string first_agent_id;
  uint64_t line_no = 0;
  auto next = [&]() -> Result<std::optional<NewEvent>> {
    if (o.format == "protobuf") {
      auto message = proto::read_delimited(std::cin, proto::kMaxEventBytes);
      if (!message) {
        return make_error(message.error().code, "message " + std::to_string(line_no + 1) + ": " +
                                                    message.error().describe());
      }
      if (!*message) return std::optional<NewEvent>();
      ++line_no;
      auto event = proto::event_from_bytes(**message, &first_agent_id);
      if (!event) {
        return make_error(event.error().code,
                          "message " + std::to_string(line_no) + ": " + event.error().describe());
      }
      return std::optional<NewEvent>(std::move(*event));
    }
    std::string line;
    while (std::getline(std::cin, line)) {
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      auto event = proto::event_from_json(line, &first_agent_id);
      if (!event) {
        return make_error(event.error().code,
                          "line " + std::to_string(line_no) + ": " + event.error().describe());
      }
      return std::optional<NewEvent>(std::move(*event));
    }
    return std::optional<NewEvent>();
  };

  BufferOptions options;
  options.path = o.path;
  options.recover_corrupt = false;
  options.max_bytes = std::numeric_limits<uint64_t>::max();  // an operator's explicit requeue
  auto sealing = keys_for(o, true);  // imported events are sealed as the agent seals
  if (!sealing) return fail(sealing.error());
  options.encryption = *sealing;
  options.agent_id = o.agent_id.value_or("");
  if (options.agent_id.empty()) {
    auto existing = BufferInspector::open(o.path);
    if (existing) options.agent_id = existing->agent_id();
  }
  uint64_t imported = 0, skipped = 0;
  std::unique_ptr<SqliteBuffer> buffer;
  SystemClock clock;
  bool batch_keeps_seqs = false;
  auto flush = [&]() -> Result<void> {
    if (batch.empty()) return {};
    auto r = buffer->append(std::move(batch)).get();
    batch.clear();
    if (!r) return r.error();
    imported += (r->last_seq >= r->first_seq ? r->last_seq - r->first_seq + 1 : 0) + r->kept_seqs;
    skipped += r->skipped;
    return {};
  };
  while (true) {
    std::string event_agent;
    auto event = next();
    event_agent = first_agent_id;
    if (!event) {
      auto flushed = buffer ? flush() : Result<void>();
      std::cerr << "outpost-agent buffer import: " << event.error().describe() << "; "
                << (flushed ? imported : 0)
                << " events before it were imported; nothing after it\n";
      return kExitError;
    }
    if (!*event) break;
    if (!buffer) {
      if (options.agent_id.empty()) options.agent_id = first_agent_id;
      if (options.agent_id.empty()) options.agent_id = "imported";
      // Kept seqs must be in the buffer before the agent's forwarder passes them (the gateway
      // would take them for duplicates): only with the agent stopped, which its lock tells.
      options.exclusive = !o.new_seqs;
      auto opened = SqliteBuffer::open(options, clock);
      if (!opened && opened.error().code == buffer_errc::busy) {
        std::cerr << "outpost-agent buffer import: " << opened.error().describe()
                  << ". Events keep their seqs only while the agent is stopped; stop it and "
                     "import again, or pass --new-seqs (the gateway cannot then recognise "
                     "events it already has)\n";
        return kExitError;
      }
      if (!opened) return fail(opened.error());
      buffer = std::move(*opened);
    }
    NewEvent& e = **event;
    const bool keep = !o.new_seqs && e.seq != 0 && event_agent == options.agent_id;
    if (!keep) {
      e.seq = 0;
      e.collected_at_ns = 0;
    }
    if (keep != batch_keeps_seqs && !batch.empty()) {
      if (auto r = flush(); !r) return fail(r.error());
    }
    batch_keeps_seqs = keep;
    batch.push_back(std::move(e));
    if (batch.size() >= 1000) {
      if (auto r = flush(); !r) return fail(r.error());
    }
  }
  if (buffer) {
    if (auto r = flush(); !r) return fail(r.error());
  }
  if (skipped > 0) {
    std::cerr << "skipped " << skipped
              << " events whose seqs the buffer already has or has already acknowledged\n";
  }
  std::cerr << "imported " << imported << " events into " << o.path << "\n";
  return kExitOk;
}

int buffer_purge(const BufferOptionsCli& o) {
  (void)log::init("warn");
  std::optional<int64_t> older_than_ns;
  if (o.older_than) {
    older_than_ns = parse_duration_ns(*o.older_than);
    if (!older_than_ns) {
      std::cerr << "outpost-agent buffer purge: --older-than " << *o.older_than
                << " is not a duration; write it like 90m, 12h or 7d\n";
      return kExitUsage;
    }
  }
  auto inspector = BufferInspector::open(o.path);
  if (!inspector) return fail(inspector.error());
  BufferOptions options;
  options.path = o.path;
  options.agent_id = inspector->agent_id();
  options.recover_corrupt = false;
  options.max_bytes = std::numeric_limits<uint64_t>::max();
  options.require_keys = false;  // deletes rows without reading them
  SystemClock clock;
  auto buffer = SqliteBuffer::open(options, clock);
  if (!buffer) return fail(buffer.error());
  std::optional<int64_t> before;
  if (older_than_ns) before = clock.now_ns() - *older_than_ns;
  auto purged = (*buffer)->purge(o.kind ? kind_from_name(*o.kind) : std::nullopt, before);
  if (!purged) return fail(purged.error());
  std::cout << "purged " << *purged << " events (counted as dropped, reason purged)\n";
  return kExitOk;
}

int buffer_quarantine(const BufferOptionsCli& o) {
  auto inspector = BufferInspector::open(o.path);
  if (!inspector) return fail(inspector.error());
  auto rows = inspector->quarantine(static_cast<size_t>(std::min<uint64_t>(o.limit, SIZE_MAX)));
  if (!rows) return fail(rows.error());
  for (const QuarantinedMessage& q : *rows) {
    // The payload may be binary: shown with invalid UTF-8 replaced, its size given apart; on
    // a terminal, control bytes are escaped (\xNN) so that they cannot drive it.
    const std::string payload = utf8::repaired(q.payload);
    std::string shown;
    for (unsigned char c : payload.substr(0, 200)) {
      if (c < 0x20 || c == 0x7f || c == '\\') {
        char hex[8];
        std::snprintf(hex, sizeof hex, "\\x%02x", c);
        shown += hex;
      } else {
        shown += static_cast<char>(c);
      }
    }
    if (o.json) {
      JsonWriter w;
      w.begin_object();
      w.key("id").value(q.id);
      w.key("at_ns").value(q.at_ns);
      w.key("source").value(q.source);
      w.key("subject").value(utf8::repaired(q.subject));
      w.key("reason").value(q.reason);
      w.key("size").value(q.size);
      w.key("payload").value(payload);
      w.key("payload_cut").value(q.payload.size() < q.size);
      w.end_object();
      std::cout << w.str() << "\n";
    } else {
      std::cout << "#" << q.id << "  " << format_time_ns(q.at_ns) << "  " << q.source << "  "
                << utf8::repaired(q.subject) << "\n  reason: " << q.reason << "\n  payload ("
                << q.size << " bytes" << (q.payload.size() < q.size ? ", cut" : "")
                << "): " << shown << "\n";
    }
  }
  if (!o.json && rows->empty()) std::cout << "(quarantine is empty)\n";
  return kExitOk;
}

int buffer_verify(const BufferOptionsCli& o) {
  auto inspector = BufferInspector::open(o.path);
  if (!inspector) return fail(inspector.error());
  auto verdict = inspector->verify();
  if (!verdict) return fail(verdict.error());
  if (verdict->ok) {
    std::cout << "ok: " << o.path << " passed the integrity check\n";
    return kExitOk;
  }
  std::cout << "CORRUPT: " << o.path << " failed the integrity check:\n"
            << verdict->detail << "\n"
            << "The agent moves a corrupt file aside at its next start; `outpost-agent buffer "
               "export` may still read events out of it.\n";
  return kExitCorrupt;
}

}  // namespace outpost::agent::cli
