#pragma once
// A TlsContext kept current with its files: certificates are rotated and revocation lists
// updated on disk while the programs run (docs/install.md, "Rotating and revoking
// certificates"). refresh() looks at the files (a stat each) and, when one changed since the
// last look, builds a new context from them; new sessions take current(), sessions already
// open keep the context they started with. Files that cannot be used (a key that is not the
// certificate's, a file half written, a CRL of another CA) are refused with the reason and the
// context in use stays; they are read again when they change again.
//
// Thread-safety: every member may be called from any thread.

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/result.hpp"
#include "common/tls/tls.hpp"

namespace outpost::tls {

class ContextSource {
 public:
  // The first context; an error (as TlsContext::create) when the files cannot be used.
  static Result<std::unique_ptr<ContextSource>> create(const ContextOptions& options);

  std::shared_ptr<TlsContext> current() const;
  const ContextOptions& options() const { return options_; }

  struct Refresh {
    bool changed = false;                 // the files changed since the last look (or `force`)
    std::optional<Error> refused;         // they did, and cannot be used: the old context stays
    std::shared_ptr<TlsContext> context;  // the one in use afterwards
  };
  // Looks at the files; with `force`, reads them even if they look unchanged (a reload asked
  // for by the operator).
  Refresh refresh(bool force = false);

 private:
  ContextSource(ContextOptions options, std::shared_ptr<TlsContext> context, std::string stamp)
      : options_(std::move(options)), current_(std::move(context)), stamp_(std::move(stamp)) {}
  std::string stamp() const;  // the files' identities, sizes and modification times

  const ContextOptions options_;
  std::mutex refreshing_;  // one refresh at a time
  mutable std::mutex mu_;  // guards the two below
  std::shared_ptr<TlsContext> current_;
  std::string stamp_;  // of the files when last read, used or refused
};

}  // namespace outpost::tls
