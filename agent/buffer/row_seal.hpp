#pragma once
// A stored event's body sealed at rest (docs/buffer.md, "Encryption at rest"). With
// `buffer.encryption = "aead"` each body is stored as
//
//   FF 45 | cipher (1) | key id (4, big-endian) | nonce prefix (4) | ciphertext | tag (16)
//
// 27 bytes more than the body. The nonce is the prefix (random, drawn when the buffer opens)
// followed by the row's seq (8 bytes, big-endian): unique per row under a key, and nothing to
// store for the seq. The additional data is the row's seq, kind, priority, event time and
// collection time, so a sealed body moved to another row, or a row whose metadata was
// changed, fails its tag like changed bytes do. The metadata stays in clear: `buffer stats`,
// expiry, eviction and the sqlite3 shell work without the key. A plaintext body never starts
// with FF (wire type 7 does not exist in protobuf), so rows stored before encryption was
// turned on, and after it was turned off, are told apart by their first byte.
//
// Thread-safety: a RowSealer belongs to one thread at a time (the writer and the reader have
// one each).

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/buffer/buffer.hpp"
#include "common/tls/aead.hpp"

namespace outpost::agent {

inline constexpr size_t kSealHeaderBytes = 11;
inline constexpr size_t kSealOverheadBytes = kSealHeaderBytes + tls::kAeadTagBytes;

// The key id a stored body was sealed with; nullopt for a body in clear.
std::optional<uint32_t> sealed_key_id(std::string_view stored);
inline bool is_sealed(std::string_view stored) {
  return stored.size() >= 2 && static_cast<unsigned char>(stored[0]) == 0xFF && stored[1] == 'E';
}

struct RowMeta {
  uint64_t seq = 0;
  int64_t kind = 0;  // as stored
  int32_t priority = 0;
  int64_t event_time_ns = 0;
  int64_t collected_at_ns = 0;
};

class RowSealer {
 public:
  explicit RowSealer(BufferEncryption encryption);
  ~RowSealer();

  bool sealing() const { return encryption_.seal && !encryption_.keys.empty(); }
  const BufferEncryption& encryption() const { return encryption_; }

  // What to store for `plain`: sealed when sealing (a view of this sealer's scratch, valid
  // until its next call), otherwise `plain` itself.
  std::string_view seal(const RowMeta& m, std::string_view plain);

  enum class Opened {
    clear,        // stored in clear: `plain` is the stored bytes
    ok,           // opened: `plain` views this sealer's scratch (valid until its next call)
    unknown_key,  // sealed with a key none of the configured ones is
    failed,       // the tag does not verify: changed bytes or metadata, or a damaged header
  };
  Opened open(const RowMeta& m, std::string_view stored, std::string_view& plain);

 private:
  tls::Aead* aead_for(uint32_t key_id, tls::AeadCipher cipher);
  static constexpr size_t kAadBytes = 36;
  static std::string_view aad(const RowMeta& m, char (&out)[kAadBytes]);

  BufferEncryption encryption_;
  uint32_t prefix_;
  std::map<std::pair<uint32_t, uint8_t>, std::unique_ptr<tls::Aead>> aeads_;
  std::string scratch_;
};

}  // namespace outpost::agent
