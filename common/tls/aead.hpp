#pragma once
// Authenticated encryption (AEAD) from mbedTLS for data at rest, without including mbedTLS
// headers (STYLE.md rule 2): the agent's buffer seals each stored payload with it
// (docs/buffer.md, "Encryption at rest"). ChaCha20-Poly1305 (fast in software, on ARM cores
// without crypto extensions) or AES-256-GCM (faster where the CPU has AES instructions), a
// 256-bit key, a 96-bit nonce that must never repeat under one key, a 128-bit tag.
//
// Thread-safety: an AeadKey is a value. An Aead holds the expanded key and belongs to one
// thread at a time.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace outpost::tls {

enum class AeadCipher : uint8_t { chacha20_poly1305 = 1, aes_256_gcm = 2 };
inline constexpr size_t kAeadKeyBytes = 32;
inline constexpr size_t kAeadNonceBytes = 12;
inline constexpr size_t kAeadTagBytes = 16;

// "chacha20-poly1305" or "aes-256-gcm"; an error naming both otherwise.
Result<AeadCipher> parse_aead_cipher(std::string_view name);
const char* aead_cipher_name(AeadCipher c);

class AeadKey {
 public:
  // A key file: 32 bytes, or 64 hex digits (surrounding white space ignored), e.g. made with
  // `head -c 32 /dev/urandom > buffer.key`. An error names the file and what is wrong.
  static Result<AeadKey> read_file(const std::string& path);
  static Result<AeadKey> from_bytes(std::string_view raw);

  // The key's id: the first 4 bytes of its SHA-256, stored beside what it sealed so that the
  // right key is found (and a wrong one named) without trying each.
  uint32_t id() const { return id_; }
  std::string id_hex() const { return id_hex_of(id_); }
  static std::string id_hex_of(uint32_t id);
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
  uint32_t id_ = 0;
};

class Aead {
 public:
  Aead(const AeadKey& key, AeadCipher cipher);
  ~Aead();
  Aead(const Aead&) = delete;
  Aead& operator=(const Aead&) = delete;

  // Appends the ciphertext of `plain` and its tag to `out`.
  void seal(const unsigned char (&nonce)[kAeadNonceBytes], std::string_view aad,
            std::string_view plain, std::string& out);
  // Appends the plaintext of `sealed` (ciphertext and tag) to `out`; false, appending nothing,
  // when the tag does not verify (another key, other additional data, changed bytes).
  bool open(const unsigned char (&nonce)[kAeadNonceBytes], std::string_view aad,
            std::string_view sealed, std::string& out);

  uint32_t key_id() const { return key_id_; }
  AeadCipher cipher() const { return cipher_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint32_t key_id_;
  AeadCipher cipher_;
};

}  // namespace outpost::tls
