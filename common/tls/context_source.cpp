#include "common/tls/context_source.hpp"

#include <sys/stat.h>

namespace outpost::tls {

std::string ContextSource::stamp() const {
  std::string out;
  for (const std::string* path : {&options_.files.ca_file, &options_.files.cert_file,
                                  &options_.files.key_file, &options_.files.crl_file}) {
    struct stat st {};
    if (path->empty()) {
      out += "-;";
    } else if (::stat(path->c_str(), &st) != 0) {
      out += "missing;";
    } else {
      out += std::to_string(st.st_dev) + ':' + std::to_string(st.st_ino) + ':' +
             std::to_string(st.st_size) + ':' + std::to_string(st.st_mtim.tv_sec) + '.' +
             std::to_string(st.st_mtim.tv_nsec) + ';';
    }
  }
  return out;
}

Result<std::unique_ptr<ContextSource>> ContextSource::create(const ContextOptions& options) {
  std::unique_ptr<ContextSource> source(new ContextSource(options, nullptr, ""));
  source->stamp_ = source->stamp();
  auto context = TlsContext::create(options);
  if (!context) return context.error();
  source->current_ = std::move(*context);
  return source;
}

std::shared_ptr<TlsContext> ContextSource::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

ContextSource::Refresh ContextSource::refresh(bool force) {
  // One refresh at a time: the stamp, the read and the swap belong together.
  std::lock_guard one(refreshing_);
  Refresh out;
  const std::string now = stamp();
  {
    std::lock_guard lock(mu_);
    out.context = current_;
    if (now == stamp_ && !force) return out;
    stamp_ = now;
  }
  out.changed = true;
  auto context = TlsContext::create(options_);
  if (!context) {
    out.refused = context.error();
    return out;
  }
  std::lock_guard lock(mu_);
  current_ = std::move(*context);
  out.context = current_;
  return out;
}

}  // namespace outpost::tls
