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

int64_t not_after(const mbedtls_x509_crt* crt) {
  std::tm tm{};
  tm.tm_year = crt->valid_to.year - 1900;
  tm.tm_mon = crt->valid_to.mon - 1;
  tm.tm_mday = crt->valid_to.day;
  tm.tm_hour = crt->valid_to.hour;
  tm.tm_min = crt->valid_to.min;
  tm.tm_sec = crt->valid_to.sec;
  return static_cast<int64_t>(timegm(&tm));
}

}  // namespace

Result<int64_t> certificate_not_after(const std::string& path) {
  return with_certificate(path, [](const mbedtls_x509_crt* crt) { return not_after(crt); });
}

Result<PeerCertificate> read_certificate(const std::string& path) {
  return with_certificate(path,
                          [](const mbedtls_x509_crt* crt) { return describe_certificate(crt); });
}

}  // namespace outpost::tls
