#include "agent/sources/spool/spool_reader.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "common/errc.hpp"
#include "common/json/json_reader.hpp"
#include "common/json/json_writer.hpp"
#include "common/utf8.hpp"

namespace outpost::agent {

namespace {

constexpr size_t kReadBytes = 256 * 1024;

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && json::is_ws(s.front())) s.remove_prefix(1);
  while (!s.empty() && json::is_ws(s.back())) s.remove_suffix(1);
  return s;
}

// Why `text` is not one JSON object, or nullopt when it is one.
std::optional<std::string> not_an_object(std::string_view text) {
  if (!utf8::valid(text)) return "not UTF-8 text";
  if (text.empty() || text.front() != '{' || !json::valid_json_value(text)) {
    return "not one JSON object";
  }
  return std::nullopt;
}

}  // namespace

std::optional<SpoolFormat> format_of(SpoolFormat configured, std::string_view file_name) {
  if (configured != SpoolFormat::automatic) return configured;
  const size_t dot = file_name.rfind('.');
  const std::string_view ext = dot == std::string_view::npos ? "" : file_name.substr(dot + 1);
  if (ext == "ndjson" || ext == "jsonl") return SpoolFormat::ndjson;
  if (ext == "csv") return SpoolFormat::csv;
  if (ext == "json") return SpoolFormat::whole_file;
  return std::nullopt;
}

Result<std::optional<CsvRecord>> parse_csv_record(std::string_view text, bool at_eof) {
  CsvRecord rec;
  std::string field;
  size_t i = 0;
  auto bad = [](const std::string& what) { return make_error(common_errc::bad_input, what); };
  while (true) {
    // At the start of a field.
    field.clear();
    if (i < text.size() && text[i] == '"') {
      ++i;
      while (true) {
        const size_t q = text.find('"', i);
        if (q == std::string_view::npos) {
          if (at_eof) return bad("a quoted field is not closed before the end of the file");
          return std::optional<CsvRecord>();
        }
        for (size_t k = i; k < q; ++k) rec.lines += text[k] == '\n' ? 1 : 0;
        field.append(text.substr(i, q - i));
        if (q + 1 < text.size() && text[q + 1] == '"') {  // a doubled quote
          field.push_back('"');
          i = q + 2;
          continue;
        }
        if (q + 1 == text.size() && !at_eof) return std::optional<CsvRecord>();
        i = q + 1;
        break;
      }
    } else {
      const size_t end = text.find_first_of(",\r\n\"", i);
      if (end != std::string_view::npos && text[end] == '"') {
        return bad("a quote inside a field that does not start with one (quote the whole field)");
      }
      const size_t stop = end == std::string_view::npos ? text.size() : end;
      field.append(text.substr(i, stop - i));
      i = stop;
    }
    // After a field: a comma, the end of the record, or the end of the text.
    if (i == text.size()) {
      if (!at_eof) return std::optional<CsvRecord>();
      rec.fields.push_back(std::move(field));
      rec.length = i;
      return std::optional<CsvRecord>(std::move(rec));
    }
    const char c = text[i];
    if (c == ',') {
      rec.fields.push_back(std::move(field));
      ++i;
      continue;
    }
    if (c == '\n' || c == '\r') {
      if (c == '\r') {
        if (i + 1 == text.size() && !at_eof) return std::optional<CsvRecord>();
        if (i + 1 == text.size() || text[i + 1] != '\n') {
          return bad("a carriage return that is not followed by a line feed");
        }
        ++i;
      }
      ++i;
      ++rec.lines;
      rec.fields.push_back(std::move(field));
      rec.length = i;
      return std::optional<CsvRecord>(std::move(rec));
    }
    return bad("text after the closing quote of a field");
  }
}

SpoolReader::SpoolReader(int fd, SpoolFormat format, SpoolLimits limits)
    : fd_(fd), format_(format), limits_(limits) {}

SpoolReader::~SpoolReader() {
  if (fd_ >= 0) ::close(fd_);
}

Error SpoolReader::bad(uint64_t line, const std::string& what) const {
  return make_error(common_errc::bad_input, "line " + std::to_string(line) + ": " + what);
}

Result<bool> SpoolReader::fill() {
  if (eof_) return false;
  if (pos_ > 0) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  const size_t had = buf_.size();
  buf_.resize(had + kReadBytes);
  ssize_t n;
  do {
    n = ::read(fd_, buf_.data() + had, kReadBytes);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    buf_.resize(had);
    return make_error(common_errc::bad_input, std::string("read: ") + std::strerror(errno));
  }
  buf_.resize(had + static_cast<size_t>(n));
  if (n == 0) eof_ = true;
  return n > 0;
}

Result<void> SpoolReader::resume(uint64_t offset, uint64_t line) {
  header_.clear();
  if (format_ == SpoolFormat::csv && offset > 0) {
    if (auto r = resume(0, 0); !r) return r;
    if (auto r = read_header(); !r) return r;
  }
  if (::lseek(fd_, static_cast<off_t>(offset), SEEK_SET) < 0) {
    return make_error(common_errc::bad_input, std::string("seek: ") + std::strerror(errno));
  }
  buf_.clear();
  pos_ = 0;
  eof_ = false;
  whole_done_ = false;
  offset_ = offset;
  line_ = line;
  return {};
}

Result<std::optional<std::string>> SpoolReader::next_line() {
  while (true) {
    const std::string_view view = std::string_view(buf_).substr(pos_);
    const size_t nl = view.find('\n');
    if (nl == std::string_view::npos && !eof_) {
      if (view.size() > limits_.max_event_bytes + 1) {
        return bad(line_ + 1, "longer than max_event_bytes (" +
                                  std::to_string(limits_.max_event_bytes) + " bytes)");
      }
      if (auto r = fill(); !r) return r.error();
      continue;
    }
    if (nl == std::string_view::npos && view.empty()) return std::optional<std::string>();
    const size_t consumed = nl == std::string_view::npos ? view.size() : nl + 1;
    std::string_view line = view.substr(0, nl == std::string_view::npos ? view.size() : nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > limits_.max_event_bytes) {
      return bad(line_ + 1, "longer than max_event_bytes (" +
                                std::to_string(limits_.max_event_bytes) + " bytes)");
    }
    std::string out(line);
    pos_ += consumed;
    offset_ += consumed;
    record_line_ = ++line_;
    return std::optional<std::string>(std::move(out));
  }
}

Result<std::optional<CsvRecord>> SpoolReader::next_csv() {
  while (true) {
    const std::string_view view = std::string_view(buf_).substr(pos_);
    if (view.empty() && eof_) return std::optional<CsvRecord>();
    auto rec = parse_csv_record(view, eof_);
    if (!rec) return bad(line_ + 1, rec.error().message);
    if (!*rec) {
      if (view.size() > limits_.max_event_bytes + 2) {
        return bad(line_ + 1, "a record longer than max_event_bytes (" +
                                  std::to_string(limits_.max_event_bytes) + " bytes)");
      }
      if (auto r = fill(); !r) return r.error();
      continue;
    }
    if ((*rec)->length > limits_.max_event_bytes + 2) {
      return bad(line_ + 1, "a record longer than max_event_bytes (" +
                                std::to_string(limits_.max_event_bytes) + " bytes)");
    }
    pos_ += (*rec)->length;
    offset_ += (*rec)->length;
    record_line_ = line_ + 1;
    line_ += std::max<uint64_t>(1, (*rec)->lines);
    return rec;
  }
}

Result<void> SpoolReader::read_header() {
  auto rec = next_csv();
  if (!rec) return rec.error();
  if (!*rec) return {};  // an empty file: no rows either
  std::set<std::string> seen;
  for (const std::string& name : (*rec)->fields) {
    if (name.empty()) return bad(1, "the header has an empty column name");
    if (!utf8::valid(name)) return bad(1, "the header is not UTF-8 text");
    if (!seen.insert(name).second) return bad(1, "the header names \"" + name + "\" twice");
  }
  header_ = std::move((*rec)->fields);
  return {};
}

Result<std::optional<std::string>> SpoolReader::next() {
  switch (format_) {
    case SpoolFormat::automatic:  // resolved by the source before a reader is made
    case SpoolFormat::ndjson:
      while (true) {
        auto line = next_line();
        if (!line || !*line) return line;
        const std::string_view text = trimmed(**line);
        if (text.empty()) continue;  // a blank line
        if (auto why = not_an_object(text)) return bad(line_, *why);
        return std::optional<std::string>(std::string(text));
      }
    case SpoolFormat::csv:
      if (header_.empty()) {
        if (auto r = read_header(); !r) return r.error();
        if (header_.empty()) return std::optional<std::string>();
      }
      while (true) {
        auto rec = next_csv();
        if (!rec) return rec.error();
        if (!*rec) return std::optional<std::string>();
        const auto& fields = (*rec)->fields;
        if (fields.size() == 1 && fields[0].empty()) continue;  // a blank line
        if (fields.size() != header_.size()) {
          return bad(line_, std::to_string(fields.size()) + " fields, but the header has " +
                                std::to_string(header_.size()));
        }
        std::string out;
        {
          JsonWriter w(out);
          w.begin_object();
          for (size_t i = 0; i < fields.size(); ++i) {
            if (!utf8::valid(fields[i])) return bad(line_, "not UTF-8 text");
            w.key(header_[i]).value(fields[i]);
          }
          w.end_object();
        }
        return std::optional<std::string>(std::move(out));
      }
    case SpoolFormat::whole_file: {
      if (whole_done_) return std::optional<std::string>();
      while (!eof_) {
        if (buf_.size() - pos_ > limits_.max_file_bytes) break;
        if (auto r = fill(); !r) return r.error();
      }
      const std::string_view all = std::string_view(buf_).substr(pos_);
      if (all.size() > limits_.max_file_bytes) {
        return make_error(common_errc::bad_input, "the file is larger than max_file_bytes (" +
                                                      std::to_string(limits_.max_file_bytes) +
                                                      " bytes)");
      }
      const std::string_view text = trimmed(all);
      if (auto why = not_an_object(text)) {
        return make_error(common_errc::bad_input, "the file is " + *why);
      }
      std::string out(text);
      offset_ += all.size();
      pos_ = buf_.size();
      whole_done_ = true;
      return std::optional<std::string>(std::move(out));
    }
  }
  return std::optional<std::string>();
}

}  // namespace outpost::agent
