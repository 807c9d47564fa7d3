// The recording glue of a loop: what a recorded pair queues for the writer as its bytes move.
// dir[0] (a -> b) is the client sending on every leg, dir[1] the server.
#include "loop.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>

namespace splicer {

// Called before the completion is built: a last FIN or RST that the writer refuses drops the
// recording, and the completion must say so.
bool Loop::EndRecording(Pair* pair, EndReason reason, int side) {
  if (pair->record) RecordEnd(pair, reason, side);
  bool dropped = pair->record && pair->record->dropped;
  StopRecording(pair);
  return dropped;
}

// JS goes on with the legs where they stand, so this loop records nothing more for the pair. A
// dropped recording hands back no legs: JS must not continue a conversation with a gap in it.
bool Loop::HandBackRecording(Pair* pair, Released* released) {
  bool dropped = false;
  if (pair->record) {
    dropped = pair->record->dropped;
    if (pair->record->active) released->recording = pair->record->legs;
  }
  StopRecording(pair);
  return dropped;
}

void Loop::RecordSpliced(Pair* pair, int di, size_t length) {
  PairRecord* r = pair->record.get();
  if (!r->active) return;
  for (const Conversation& leg : r->legs) {
    if (!leg.CanSend(di)) return DropRecording(pair);
  }
  if (!writer_->HasRoom(length * r->legs.size())) return DropRecording(pair);
  std::shared_ptr<RecordPipe> pipes[2];
  for (size_t leg = 0; leg < r->legs.size(); leg++) {
    if (!Tee(r, *pair->dir[di].pipe, length, &pipes[leg])) return DropRecording(pair);
  }
  // Sequence numbers move only once every leg holds its copy: a recording stops at the same
  // byte on every leg.
  uint64_t ts = WallClockUs();
  std::vector<RecordEntry> entries;
  for (size_t leg = 0; leg < r->legs.size(); leg++) {
    for (size_t at = 0; at < length; at += kMaxSegment) {
      size_t segment = std::min(kMaxSegment, length - at);
      RecordEntry entry;
      r->legs[leg].DataHeader(di, segment, ts, entry.bytes);
      entry.pipe = pipes[leg];
      entry.payload = segment;
      entries.push_back(std::move(entry));
    }
  }
  Enqueue(pair, std::move(entries));
}

// Head bytes and the read/write fallback: the payload is in user space already, so it goes
// into the entry itself.
void Loop::RecordCopy(Pair* pair, int di, const char* data, size_t length) {
  PairRecord* r = pair->record.get();
  if (!r->active) return;
  for (const Conversation& leg : r->legs) {
    if (!leg.CanSend(di)) return DropRecording(pair);
  }
  if (!writer_->HasRoom(length * r->legs.size())) return DropRecording(pair);
  uint64_t ts = WallClockUs();
  std::vector<RecordEntry> entries(r->legs.size());
  for (size_t leg = 0; leg < r->legs.size(); leg++) {
    for (size_t at = 0; at < length; at += kMaxSegment) {
      size_t segment = std::min(kMaxSegment, length - at);
      r->legs[leg].DataHeader(di, segment, ts, entries[leg].bytes);
      entries[leg].bytes.append(data + at, segment);
    }
  }
  Enqueue(pair, std::move(entries));
}

// The direction's FIN was passed on.
void Loop::RecordFin(Pair* pair, int di) {
  PairRecord* r = pair->record.get();
  if (!r->active) return;
  uint64_t ts = WallClockUs();
  std::vector<RecordEntry> entries(1);
  for (Conversation& leg : r->legs) {
    if (leg.CanSend(di)) leg.Fin(di, ts, entries[0].bytes);
  }
  if (!entries[0].bytes.empty()) Enqueue(pair, std::move(entries));
}

// How the pair's end looked on each leg. The relay is the server of legs[0] and the client
// of legs[1]: a side that failed is reset on every leg (the relay passes the reset on), an
// abort is the relay resetting both, a timeout the relay closing both.
void Loop::RecordEnd(Pair* pair, EndReason reason, int side) {
  PairRecord* r = pair->record.get();
  if (!r->active) return;
  uint64_t ts = WallClockUs();
  std::vector<RecordEntry> entries(1);
  std::string& out = entries[0].bytes;
  for (size_t leg = 0; leg < r->legs.size(); leg++) {
    Conversation& c = r->legs[leg];
    int relay = leg == 0 ? 1 : 0;
    if (c.reset) continue;
    switch (reason) {
      case EndReason::kReset:
      case EndReason::kError:
        c.Reset(side == 1 ? 1 : 0, ts, out);
        break;
      case EndReason::kAborted:
        c.Reset(relay, ts, out);
        break;
      case EndReason::kTimeout:
        if (c.CanSend(relay)) c.Fin(relay, ts, out);
        break;
      case EndReason::kEof:
      case EndReason::kReleased:
        break;
    }
  }
  if (!out.empty()) Enqueue(pair, std::move(entries));
}

// Copies `length` bytes (all the data pipe holds) into the pair's record pipe, starting a new
// one when the tail has no room. A new pipe is as big as the data pipe: a quiet pair holds a
// small one (pipe pages count against the user's budget, fs.pipe-user-pages-soft), a streaming
// one as much as a fill can bring. A partial tee leaves bytes behind every queued payload in
// the old pipe: never read, they go with it.
bool Loop::Tee(PairRecord* r, const Pipe& from, size_t length, std::shared_ptr<RecordPipe>* into) {
  for (int attempt = 0; attempt < 2; attempt++) {
    std::shared_ptr<RecordPipe>& tail = r->pipe;
    if (tail && tail->teed - tail->consumed.load(std::memory_order_relaxed) + length > tail->capacity) tail.reset();
    if (!tail) {
      tail = RecordPipe::Create(from.capacity, writer_->PipeCounter());
      if (!tail) return false;
    }
    ssize_t n;
    do {
      n = tee(from.readFd, tail->writeFd, length, SPLICE_F_NONBLOCK);
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(length)) {
      tail->teed += length;
      *into = tail;
      return true;
    }
    tail.reset();
  }
  return false;
}

void Loop::Enqueue(Pair* pair, std::vector<RecordEntry>&& entries) {
  if (!writer_->Enqueue(pair->record->recorder.get(), std::move(entries))) DropRecording(pair);
}

// The writer is behind (or its file failed): this pair's recording ends here, its traffic goes on.
void Loop::DropRecording(Pair* pair) {
  PairRecord* r = pair->record.get();
  if (!r->active) return;
  r->dropped = true;
  recordingsDropped_.fetch_add(1, std::memory_order_relaxed);
  StopRecording(pair);
}

void Loop::StopRecording(Pair* pair) {
  PairRecord* r = pair->record.get();
  if (r == nullptr) return;
  r->active = false;
  r->pipe.reset();
  if (r->recorder) {
    writer_->ReleaseUser(r->recorder);
    r->recorder.reset();
  }
}

}  // namespace splicer
