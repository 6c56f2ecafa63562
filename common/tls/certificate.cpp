#include "common/tls/certificate.hpp"

#include <mbedtls/x509_crt.h>

#include <ctime>

#include "common/tls/tls.hpp"

namespace outpost::tls {

Result<int64_t> certificate_not_after(const std::string& path) {
  mbedtls_x509_crt crt;
  mbedtls_x509_crt_init(&crt);
  const int rc = mbedtls_x509_crt_parse_file(&crt, path.c_str());
  if (rc < 0 || crt.raw.p == nullptr) {
    mbedtls_x509_crt_free(&crt);
    return make_error(tls_errc::config, "certificate " + path + " cannot be read as PEM or DER");
  }
  std::tm tm{};
  tm.tm_year = crt.valid_to.year - 1900;
  tm.tm_mon = crt.valid_to.mon - 1;
  tm.tm_mday = crt.valid_to.day;
  tm.tm_hour = crt.valid_to.hour;
  tm.tm_min = crt.valid_to.min;
  tm.tm_sec = crt.valid_to.sec;
  mbedtls_x509_crt_free(&crt);
  return static_cast<int64_t>(timegm(&tm));
}

}  // namespace outpost::tls
