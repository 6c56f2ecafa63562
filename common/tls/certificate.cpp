#include "common/tls/certificate.hpp"

#include <mbedtls/x509_crt.h>

#include <ctime>

#include "common/tls/tls.hpp"

namespace outpost::tls {

// mbedtls_session.cpp: what a parsed certificate names.
PeerCertificate describe_certificate(const mbedtls_x509_crt* crt);

namespace {

// The first certificate of a PEM or DER file, parsed; `use` sees it before it is freed.
template <typename Use>
auto with_certificate(const std::string& path, Use&& use) -> Result<decltype(use(nullptr))> {
  mbedtls_x509_crt crt;
  mbedtls_x509_crt_init(&crt);
  const int rc = mbedtls_x509_crt_parse_file(&crt, path.c_str());
  if (rc < 0 || crt.raw.p == nullptr) {
    mbedtls_x509_crt_free(&crt);
    return make_error(tls_errc::config, "certificate " + path + " cannot be read as PEM or DER");
  }
  auto out = use(&crt);
  mbedtls_x509_crt_free(&crt);
  return out;
}

}  // namespace

// Also used by mbedtls_session.cpp (a context's certificate and CRL times).
int64_t unix_time(const mbedtls_x509_time& t);
int64_t unix_time(const mbedtls_x509_time& t) {
  std::tm tm{};
  tm.tm_year = t.year - 1900;
  tm.tm_mon = t.mon - 1;
  tm.tm_mday = t.day;
  tm.tm_hour = t.hour;
  tm.tm_min = t.min;
  tm.tm_sec = t.sec;
  return static_cast<int64_t>(timegm(&tm));
}

Result<int64_t> certificate_not_after(const std::string& path) {
  return with_certificate(path,
                          [](const mbedtls_x509_crt* crt) { return unix_time(crt->valid_to); });
}

Result<PeerCertificate> read_certificate(const std::string& path) {
  return with_certificate(path,
                          [](const mbedtls_x509_crt* crt) { return describe_certificate(crt); });
}

}  // namespace outpost::tls
