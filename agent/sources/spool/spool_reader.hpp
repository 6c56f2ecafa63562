#pragma once
// Reading a spool file into JSON events (docs/sources.md, "Spool directory"), with bounded
// memory whatever the file's size: NDJSON (one JSON object per line; blank lines skipped),
// CSV (RFC 4180 with a header line: each row becomes an object of strings keyed by the
// header's names), or a whole file that is one JSON object. Every problem is an error that
// names the line and says what is wrong, for the `.reason` file beside a failed file.
//
// Thread-safety: one SpoolReader per thread; parse_csv_record is pure.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace outpost::agent {

enum class SpoolFormat { automatic, ndjson, csv, whole_file };

// `automatic`: by the file name's extension (.ndjson and .jsonl: ndjson, .csv: csv, .json:
// whole_file); nullopt for another extension. Any other format is what it says.
std::optional<SpoolFormat> format_of(SpoolFormat configured, std::string_view file_name);

struct SpoolLimits {
  uint64_t max_event_bytes = 1u << 20;  // a line (a CSV record) longer than this fails the file
  uint64_t max_file_bytes = 16u << 20;  // whole_file: a larger file fails
  bool operator==(const SpoolLimits&) const = default;
};

// One CSV record at the start of `text`: fields separated by commas, a field quoted with '"'
// may hold commas, line breaks and doubled quotes; the record ends at a line break outside
// quotes (LF or CRLF). nullopt: `text` ends inside the record and more may follow (at end of
// file, pass at_eof and the record ends with the text). `length` is how much it took,
// `lines` how many line breaks.
struct CsvRecord {
  std::vector<std::string> fields;
  size_t length = 0;
  uint64_t lines = 0;
};
Result<std::optional<CsvRecord>> parse_csv_record(std::string_view text, bool at_eof);

class SpoolReader {
 public:
  // Takes `fd` (closed by the reader).
  SpoolReader(int fd, SpoolFormat format, SpoolLimits limits);
  ~SpoolReader();
  SpoolReader(const SpoolReader&) = delete;
  SpoolReader& operator=(const SpoolReader&) = delete;

  // Continues after a record that ended at byte `offset` on line `line` (what offset() and
  // line() said then). CSV reads its header first.
  Result<void> resume(uint64_t offset, uint64_t line);

  // The next event's JSON object; nullopt at the end of the file.
  Result<std::optional<std::string>> next();

  uint64_t offset() const { return offset_; }            // just after the last record returned
  uint64_t line() const { return line_; }                // lines consumed so far
  uint64_t record_line() const { return record_line_; }  // where the last record started

 private:
  // Reads more of the file; false at its end.
  Result<bool> fill();
  Error bad(uint64_t line, const std::string& what) const;
  Result<std::optional<std::string>> next_line();
  Result<std::optional<CsvRecord>> next_csv();
  Result<void> read_header();

  int fd_;
  SpoolFormat format_;
  SpoolLimits limits_;
  std::string buf_;  // unread bytes from file offset offset_
  size_t pos_ = 0;
  bool eof_ = false;
  bool whole_done_ = false;
  uint64_t offset_ = 0;
  uint64_t line_ = 0;
  uint64_t record_line_ = 0;
  std::vector<std::string> header_;
};

}  // namespace outpost::agent
