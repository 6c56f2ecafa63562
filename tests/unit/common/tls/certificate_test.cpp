// A certificate's expiry read from its file (common/tls/certificate.hpp), against what
// openssl says of certificates made by deploy/certs/make-certs.
#include "common/tls/certificate.hpp"

#include <doctest/doctest.h>

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace outpost;

TEST_CASE("notAfter of a device certificate, and an expired one, as openssl reads them") {
  test::TempDir dir;
  const std::string pki = dir.file("pki");
  const std::string script = std::string(OUTPOST_SOURCE_DIR) + "/deploy/certs/make-certs";
  REQUIRE(test::run({script, pki, "--devices", "1", "--expired-device", "device-old"}).exit_code ==
          0);
  for (const char* name : {"device-1", "device-old", "gateway"}) {
    CAPTURE(name);
    const std::string path = pki + "/" + name + ".crt";
    auto ours = tls::certificate_not_after(path);
    REQUIRE_MESSAGE(ours, (ours ? "" : ours.error().describe()));
    auto theirs = test::run(
        {"/bin/sh", "-c",
         "date -u -d \"$(openssl x509 -noout -enddate -in " + path + " | cut -d= -f2)\" +%s"});
    REQUIRE(theirs.exit_code == 0);
    CHECK(*ours == std::stoll(theirs.out));
  }
  CHECK(*tls::certificate_not_after(pki + "/device-old.crt") < time(nullptr));
  auto missing = tls::certificate_not_after(dir.file("nope.crt"));
  REQUIRE(!missing);
  CHECK(missing.error().message.find("nope.crt") != std::string::npos);
}
