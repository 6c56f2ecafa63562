#pragma once
// What a certificate file says about itself, without including mbedTLS headers (STYLE.md
// rule 2): when it expires, and what it names. Both programs report their own certificate's expiry
// on /metrics (docs/operations.md, "Alerts") and the agent warns in its log when it is near.
//
// Thread-safety: a pure function (reads the file).

#include <cstdint>
#include <string>

#include "common/result.hpp"

namespace outpost::tls {

// The first certificate of a PEM or DER file: its notAfter, in seconds since the Unix epoch
// (UTC). An error names the file when it cannot be read or parsed.
Result<int64_t> certificate_not_after(const std::string& path);

// What the first certificate of a PEM or DER file names (subject, CN, URI SANs, serial): the
// relaying agent reads its site from its own certificate.
Result<struct PeerCertificate> read_certificate(const std::string& path);

}  // namespace outpost::tls
