#include "uplink/marks.hpp"

namespace outpost::uplink {

MarkDecision decide_mark(std::optional<uint64_t> known, const SinkBatch& b) {
  if (!known && b.session_first_seq > 0) known = b.session_first_seq - 1;
  MarkDecision d;
  d.mark = known.value_or(0);
  if (!known || b.first_seq <= d.mark + 1) return d;
  if (b.session_first_seq > 0 && b.first_seq <= b.session_first_seq) {
    // A live lane's batch starts at the session's start too, and the seqs between its mark
    // and there went in the agent's other lane: nothing is lost.
    d.lost = b.lane == 0 ? b.first_seq - 1 - d.mark : 0;
    d.mark = b.first_seq - 1;
    return d;
  }
  d.refuse = "batch starts at seq " + std::to_string(b.first_seq) + " but agent " + b.agent_id +
             " has everything only up to " + std::to_string(d.mark) +
             "; send the missing seqs first";
  return d;
}

std::optional<uint64_t> MarkBook::mark(const std::string& agent) const {
  std::lock_guard lock(mu_);
  auto it = marks_.find(agent);
  if (it == marks_.end()) return std::nullopt;
  return it->second;
}

void MarkBook::set_mark(const std::string& agent, uint64_t mark) {
  std::lock_guard lock(mu_);
  auto [it, inserted] = marks_.emplace(agent, mark);
  if (!inserted) it->second = std::max(it->second, mark);
}

std::unordered_map<std::string, uint64_t> MarkBook::marks() const {
  std::lock_guard lock(mu_);
  return marks_;
}

void MarkBook::reset_marks(std::unordered_map<std::string, uint64_t> marks) {
  std::lock_guard lock(mu_);
  marks_ = std::move(marks);
}

void MarkBook::note_failed_locked(const std::string& agent, uint64_t first_seq) {
  // A batch the mark already covers holds nothing back: its seqs were written since, by a
  // newer session that resent them (a group of an older session that failed late, after a
  // transaction stalled with the Kafka cluster, would otherwise refuse every later batch of
  // the agent for ever; kafka_cluster_test found it).
  if (auto m = marks_.find(agent); m != marks_.end() && first_seq <= m->second) return;
  auto [it, inserted] = failed_from_.emplace(agent, first_seq);
  if (!inserted) it->second = std::min(it->second, first_seq);
}

void MarkBook::failed(const std::string& agent, uint64_t first_seq) {
  std::lock_guard lock(mu_);
  note_failed_locked(agent, first_seq);
}

void MarkBook::session_started(const std::string& agent) {
  std::lock_guard lock(mu_);
  failed_from_.erase(agent);
  failed_from_.erase(agent + SinkBatch::kLiveLaneMark);
}

void MarkBook::failed(const std::vector<const SinkBatch*>& batches) {
  std::lock_guard lock(mu_);
  for (const SinkBatch* b : batches) note_failed_locked(b->mark_key(), b->first_seq);
}

namespace {

// The refusal of a batch above its agent's oldest failed one, or nullopt.
std::optional<std::string> above_failed(const std::unordered_map<std::string, uint64_t>& floors,
                                        const SinkBatch& b) {
  auto floor = floors.find(b.mark_key());
  if (floor == floors.end() || b.first_seq <= floor->second) return std::nullopt;
  return "an earlier batch of agent " + b.agent_id + " (from seq " + std::to_string(floor->second) +
         ") was not written; send it first";
}

}  // namespace

std::optional<uint64_t> MarkBook::failed_from(const std::string& agent) const {
  std::lock_guard lock(mu_);
  auto it = failed_from_.find(agent);
  if (it == failed_from_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> MarkBook::holds_back(const SinkBatch& batch) const {
  std::lock_guard lock(mu_);
  return above_failed(failed_from_, batch);
}

MarkBook::Group::Group(MarkBook& book) : book_(book) {
  std::lock_guard lock(book.mu_);
  floors_ = book.failed_from_;
}

std::optional<uint64_t> MarkBook::Group::mark(const std::string& agent) const {
  if (auto it = moved_.find(agent); it != moved_.end()) return it->second;
  return book_.mark(agent);
}

MarkDecision MarkBook::Group::admit(const SinkBatch& b) {
  const std::string key = b.mark_key();
  MarkDecision d = decide_mark(mark(key), b);
  if (auto held = above_failed(floors_, b)) d.refuse = std::move(held);
  auto floor = floors_.find(key);
  if (d.refuse) {
    refused_.emplace_back(key, b.first_seq);
    if (floor == floors_.end()) {
      floors_[key] = b.first_seq;
    } else {
      floor->second = std::min(floor->second, b.first_seq);
    }
    return d;
  }
  if (floor != floors_.end()) {  // the failed batch (or one below it) comes again
    released_.insert(key);
    floors_.erase(floor);
  }
  return d;
}

void MarkBook::Group::written(const SinkBatch& b, const MarkDecision& d) {
  if (b.last_seq > d.mark) {
    moved_[b.mark_key()] = b.last_seq;
  } else if (d.lost > 0) {
    moved_[b.mark_key()] = d.mark;
  }
}

void MarkBook::Group::commit() {
  std::lock_guard lock(book_.mu_);
  for (const auto& [agent, seq] : moved_) {
    auto [it, inserted] = book_.marks_.emplace(agent, seq);
    if (!inserted) it->second = std::max(it->second, seq);
  }
  for (const std::string& agent : released_) book_.failed_from_.erase(agent);
  for (const auto& [agent, first_seq] : refused_) book_.note_failed_locked(agent, first_seq);
}

}  // namespace outpost::uplink
