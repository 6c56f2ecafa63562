#include "agent/buffer/row_seal.hpp"

#include <sys/random.h>
#include <unistd.h>

#include <chrono>

namespace outpost::agent {
namespace {

// `v`'s low `bytes` bytes, big-endian, at `out`; returns the end.
template <typename Byte>
Byte* put_be(Byte* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) *out++ = static_cast<Byte>((v >> (8 * i)) & 0xFF);
  return out;
}

uint32_t get_be32(std::string_view s, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = v << 8 | static_cast<unsigned char>(s[at + i]);
  return v;
}

void nonce_of(uint32_t prefix, uint64_t seq, unsigned char (&nonce)[tls::kAeadNonceBytes]) {
  put_be(put_be(nonce, prefix, 4), seq, 8);
}

uint32_t random_prefix() {
  uint32_t v = 0;
  if (::getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) {
    // No entropy source: the time still differs from the last open's.
    v = static_cast<uint32_t>(std::chrono::system_clock::now().time_since_epoch().count() ^
                              ::getpid());
  }
  return v;
}

}  // namespace

std::optional<uint32_t> sealed_key_id(std::string_view stored) {
  if (!is_sealed(stored) || stored.size() < kSealHeaderBytes) return std::nullopt;
  return get_be32(stored, 3);
}

RowSealer::RowSealer(BufferEncryption encryption)
    : encryption_(std::move(encryption)), prefix_(random_prefix()) {}

RowSealer::~RowSealer() = default;

std::string_view RowSealer::aad(const RowMeta& m, char (&out)[kAadBytes]) {
  char* at = put_be(out, m.seq, 8);
  at = put_be(at, static_cast<uint64_t>(m.kind), 8);
  at = put_be(at, static_cast<uint32_t>(m.priority), 4);
  at = put_be(at, static_cast<uint64_t>(m.event_time_ns), 8);
  at = put_be(at, static_cast<uint64_t>(m.collected_at_ns), 8);
  return {out, static_cast<size_t>(at - out)};
}

tls::Aead* RowSealer::aead_for(uint32_t key_id, tls::AeadCipher cipher) {
  const auto slot = std::make_pair(key_id, static_cast<uint8_t>(cipher));
  if (auto it = aeads_.find(slot); it != aeads_.end()) return it->second.get();
  for (const tls::AeadKey& k : encryption_.keys) {
    if (k.id() != key_id) continue;
    return aeads_.emplace(slot, std::make_unique<tls::Aead>(k, cipher)).first->second.get();
  }
  return nullptr;
}

std::string_view RowSealer::seal(const RowMeta& m, std::string_view plain) {
  if (!sealing()) return plain;
  const tls::AeadKey& key = encryption_.keys.front();
  tls::Aead* aead = aead_for(key.id(), encryption_.cipher);
  char header[kSealHeaderBytes] = {static_cast<char>(0xFF), 'E',
                                   static_cast<char>(encryption_.cipher)};
  put_be(put_be(header + 3, key.id(), 4), prefix_, 4);
  scratch_.reserve(plain.size() + kSealOverheadBytes);
  scratch_.assign(header, sizeof header);
  unsigned char nonce[tls::kAeadNonceBytes];
  nonce_of(prefix_, m.seq, nonce);
  char a[kAadBytes];
  aead->seal(nonce, aad(m, a), plain, scratch_);
  return scratch_;
}

RowSealer::Opened RowSealer::open(const RowMeta& m, std::string_view stored,
                                  std::string_view& plain) {
  if (!is_sealed(stored)) {
    plain = stored;
    return Opened::clear;
  }
  if (stored.size() < kSealOverheadBytes) return Opened::failed;
  const auto cipher = static_cast<tls::AeadCipher>(static_cast<unsigned char>(stored[2]));
  if (cipher != tls::AeadCipher::chacha20_poly1305 && cipher != tls::AeadCipher::aes_256_gcm) {
    return Opened::failed;
  }
  tls::Aead* aead = aead_for(get_be32(stored, 3), cipher);
  if (aead == nullptr) return Opened::unknown_key;
  unsigned char nonce[tls::kAeadNonceBytes];
  nonce_of(get_be32(stored, 7), m.seq, nonce);
  scratch_.clear();
  char a[kAadBytes];
  if (!aead->open(nonce, aad(m, a), stored.substr(kSealHeaderBytes), scratch_)) {
    return Opened::failed;
  }
  plain = scratch_;
  return Opened::ok;
}

}  // namespace outpost::agent
