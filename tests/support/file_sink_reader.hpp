#pragma once
// Reads what the gateway's file sink wrote: every NDJSON line (or, with `protobuf`, every
// length-delimited event, shown as its JSON form) of every DIR/<kind>/**.zst file
// (concatenated zstd frames), with the agent id and seq picked out of each.
#include <zstd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/codec/zstd_codec.hpp"
#include "proto/event_codec.hpp"

namespace outpost::test {

struct SinkLine {
  std::string kind;  // the directory it is under
  std::string agent_id;
  uint64_t seq = 0;
  std::string json;
};

inline std::string json_field(const std::string& line, const std::string& key) {
  const std::string needle = "\"" + key + "\":";
  auto at = line.find(needle);
  if (at == std::string::npos) return "";
  at += needle.size();
  if (line[at] == '"') {
    auto end = line.find('"', at + 1);
    return line.substr(at + 1, end - at - 1);
  }
  auto end = line.find_first_of(",}", at);
  return line.substr(at, end - at);
}

// Every line in the sink directory; `frames_ok` false if any file did not decode.
inline std::vector<SinkLine> read_sink(const std::string& dir, bool* frames_ok = nullptr,
                                       bool protobuf = false) {
  namespace fs = std::filesystem;
  std::vector<SinkLine> out;
  if (frames_ok) *frames_ok = true;
  if (!fs::exists(dir)) return out;
  for (auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".zst") continue;
    std::string kind = fs::relative(entry.path(), dir).begin()->string();
    std::ifstream in(entry.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    size_t at = 0;
    while (at < bytes.size()) {
      size_t n = ZSTD_findFrameCompressedSize(bytes.data() + at, bytes.size() - at);
      if (ZSTD_isError(n)) {
        if (frames_ok) *frames_ok = false;
        break;
      }
      auto text = codec::decompress(std::string_view(bytes).substr(at, n), {});
      if (!text) {
        if (frames_ok) *frames_ok = false;
        break;
      }
      std::istringstream lines(*text);
      std::string line;
      while (true) {
        if (protobuf) {
          auto event = proto::read_delimited(lines, proto::kMaxEventBytes);
          if (!event || !*event) {
            if (!event && frames_ok) *frames_ok = false;
            break;
          }
          auto json = proto::event_to_json(**event);
          if (!json) {
            if (frames_ok) *frames_ok = false;
            break;
          }
          line = *json;
        } else if (!std::getline(lines, line)) {
          break;
        }
        SinkLine l{kind, json_field(line, "agent_id"), 0, line};
        l.seq = std::stoull("0" + json_field(line, "seq"));
        out.push_back(std::move(l));
      }
      at += n;
    }
  }
  return out;
}

}  // namespace outpost::test
