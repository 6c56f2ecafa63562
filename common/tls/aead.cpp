#include "common/tls/aead.hpp"

#include <mbedtls/chachapoly.h>
#include <mbedtls/gcm.h>
#include <mbedtls/sha256.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "common/tls/tls.hpp"

namespace outpost::tls {

Result<AeadCipher> parse_aead_cipher(std::string_view name) {
  if (name == "chacha20-poly1305") return AeadCipher::chacha20_poly1305;
  if (name == "aes-256-gcm") return AeadCipher::aes_256_gcm;
  return make_error(tls_errc::config, "unknown cipher \"" + std::string(name) +
                                          "\": chacha20-poly1305 or aes-256-gcm");
}

const char* aead_cipher_name(AeadCipher c) {
  return c == AeadCipher::aes_256_gcm ? "aes-256-gcm" : "chacha20-poly1305";
}

Result<AeadKey> AeadKey::from_bytes(std::string_view raw) {
  if (raw.size() != kAeadKeyBytes) {
    return make_error(tls_errc::config, "a key is 32 bytes, not " + std::to_string(raw.size()));
  }
  AeadKey k;
  k.bytes_.assign(raw);
  unsigned char digest[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(raw.data()), raw.size(), digest, 0);
  k.id_ = static_cast<uint32_t>(digest[0]) << 24 | static_cast<uint32_t>(digest[1]) << 16 |
          static_cast<uint32_t>(digest[2]) << 8 | digest[3];
  return k;
}

Result<AeadKey> AeadKey::read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return make_error(tls_errc::config,
                      "key file " + path + " cannot be read: " + std::strerror(errno));
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() == kAeadKeyBytes) return from_bytes(text);
  std::string trimmed;
  for (char c : text) {
    if (!std::isspace(static_cast<unsigned char>(c))) trimmed += c;
  }
  if (trimmed.size() == 2 * kAeadKeyBytes &&
      trimmed.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos) {
    std::string raw;
    for (size_t i = 0; i < trimmed.size(); i += 2) {
      raw += static_cast<char>(std::stoi(trimmed.substr(i, 2), nullptr, 16));
    }
    return from_bytes(raw);
  }
  return make_error(tls_errc::config,
                    "key file " + path + " holds " + std::to_string(text.size()) +
                        " bytes: a key is 32 bytes or 64 hex digits (head -c 32 /dev/urandom)");
}

std::string AeadKey::id_hex_of(uint32_t id) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", id);
  return buf;
}

struct Aead::Impl {
  mbedtls_chachapoly_context chacha;
  mbedtls_gcm_context gcm;
  Impl() {
    mbedtls_chachapoly_init(&chacha);
    mbedtls_gcm_init(&gcm);
  }
  ~Impl() {
    mbedtls_chachapoly_free(&chacha);
    mbedtls_gcm_free(&gcm);
  }
};

Aead::Aead(const AeadKey& key, AeadCipher cipher)
    : impl_(std::make_unique<Impl>()), key_id_(key.id()), cipher_(cipher) {
  const auto* k = reinterpret_cast<const unsigned char*>(key.bytes().data());
  // Both only fail for a key of another length, which AeadKey rules out.
  if (cipher_ == AeadCipher::aes_256_gcm) {
    (void)mbedtls_gcm_setkey(&impl_->gcm, MBEDTLS_CIPHER_ID_AES, k, 256);
  } else {
    (void)mbedtls_chachapoly_setkey(&impl_->chacha, k);
  }
}

Aead::~Aead() = default;

void Aead::seal(const unsigned char (&nonce)[kAeadNonceBytes], std::string_view aad,
                std::string_view plain, std::string& out) {
  const size_t at = out.size();
  out.resize(at + plain.size() + kAeadTagBytes);
  auto* dst = reinterpret_cast<unsigned char*>(out.data() + at);
  const auto* src = reinterpret_cast<const unsigned char*>(plain.data());
  const auto* a = reinterpret_cast<const unsigned char*>(aad.data());
  if (cipher_ == AeadCipher::aes_256_gcm) {
    (void)mbedtls_gcm_crypt_and_tag(&impl_->gcm, MBEDTLS_GCM_ENCRYPT, plain.size(), nonce,
                                    kAeadNonceBytes, a, aad.size(), src, dst, kAeadTagBytes,
                                    dst + plain.size());
  } else {
    (void)mbedtls_chachapoly_encrypt_and_tag(&impl_->chacha, plain.size(), nonce, a, aad.size(),
                                             src, dst, dst + plain.size());
  }
}

bool Aead::open(const unsigned char (&nonce)[kAeadNonceBytes], std::string_view aad,
                std::string_view sealed, std::string& out) {
  if (sealed.size() < kAeadTagBytes) return false;
  const size_t n = sealed.size() - kAeadTagBytes;
  const size_t at = out.size();
  out.resize(at + n);
  auto* dst = reinterpret_cast<unsigned char*>(out.data() + at);
  const auto* src = reinterpret_cast<const unsigned char*>(sealed.data());
  const auto* a = reinterpret_cast<const unsigned char*>(aad.data());
  const int rc = cipher_ == AeadCipher::aes_256_gcm
                     ? mbedtls_gcm_auth_decrypt(&impl_->gcm, n, nonce, kAeadNonceBytes, a,
                                                aad.size(), src + n, kAeadTagBytes, src, dst)
                     : mbedtls_chachapoly_auth_decrypt(&impl_->chacha, n, nonce, a, aad.size(),
                                                       src + n, src, dst);
  if (rc != 0) {
    out.resize(at);
    return false;
  }
  return true;
}

}  // namespace outpost::tls
