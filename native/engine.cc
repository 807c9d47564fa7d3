#include "engine.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace splicer {

namespace {

// Our own fd for the socket. O_NONBLOCK lives on the open file, so the dup shares it;
// set it anyway in case the caller's fd was blocking.
int TakeFd(int fd) {
  int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return -1;
  int flags = fcntl(dup, F_GETFL);
  if (flags >= 0 && !(flags & O_NONBLOCK)) fcntl(dup, F_SETFL, flags | O_NONBLOCK);
  return dup;
}

void SetHead(Direction& d, const char* data, size_t length) {
  if (length == 0) return;
  d.buffer.reset(new char[length]);
  memcpy(d.buffer.get(), data, length);
  d.bufferSize = length > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(length);  // read only as "less than 64 KiB"
  d.bufferStart = 0;
  d.bufferEnd = length;
}

}  // namespace

Engine::Engine(const EngineOptions& options, Loop::Deliver deliver, Writer::Deliver deliverRecorderEvents,
               uv_loop_s* jsLoop) {
  bool inlineLoop = options.threads == 0 && jsLoop != nullptr;
  size_t threads = options.threads > 0 ? options.threads : 1;
  size_t pipesPerLoop = options.maxPipes / threads;
  if (pipesPerLoop < 1) pipesPerLoop = 1;
  writer_ = std::make_unique<Writer>(options.recordBufferBytes, std::move(deliverRecorderEvents));
  loops_.reserve(threads);
  for (size_t i = 0; i < threads; i++) {
    loops_.push_back(std::make_unique<Loop>(pipesPerLoop, options.maxPipeSize, writer_.get(), deliver));
  }
  // A Start() that throws leaves this constructor unfinished, so ~Engine does not run; the
  // loops_ vector is destroyed all the same, and each ~Loop joins its thread (if it got one)
  // and closes its fds. No pair exists yet, so nothing is delivered.
  if (inlineLoop) {
    loops_[0]->StartInline(jsLoop);
    return;
  }
  for (auto& loop : loops_) loop->Start();
}

Engine::~Engine() { Close(); }

uint64_t Engine::Add(int fdA, int fdB, const char* headAtoB, size_t headAtoBLength, const char* headBtoA,
                     size_t headBtoALength, uint64_t idleTimeoutMs, RecordSpec* record, int* error, bool adopt) {
  int a = adopt ? fdA : TakeFd(fdA);
  int b = adopt ? fdB : a < 0 ? -1 : TakeFd(fdB);
  if (b < 0) {
    *error = errno;
    if (a >= 0) close(a);
    if (record != nullptr && record->recorder) writer_->ReleaseUser(record->recorder);
    return 0;
  }
  auto pair = std::make_unique<Pair>();
  pair->id = nextId_.fetch_add(1);
  pair->fd[0] = a;
  pair->fd[1] = b;
  pair->idleTimeoutMs = idleTimeoutMs;
  pair->startNs = MonotonicNs();
  SetHead(pair->dir[0], headAtoB, headAtoBLength);
  SetHead(pair->dir[1], headBtoA, headBtoALength);
  if (record != nullptr && record->recorder) {
    pair->record = std::make_unique<PairRecord>();
    pair->record->recorder = std::move(record->recorder);
    pair->record->legs = std::move(record->legs);
  }
  uint64_t id = pair->id;
  LoopOf(id).Add(std::move(pair));
  return id;
}

void Engine::Abort(uint64_t id) {
  if (id == 0) return;
  LoopOf(id).Abort(id);
}

void Engine::Release(uint64_t id) {
  if (id == 0) return;
  LoopOf(id).Release(id);
}

void Engine::Close() {
  if (closed_) return;
  closed_ = true;
  // Loops first: the pairs they end record their RSTs, and give their recorders back.
  for (auto& loop : loops_) loop->Stop();
  writer_->Stop();
}

EngineStats Engine::Stats() const {
  EngineStats stats;
  for (auto& loop : loops_) {
    stats.pairs += loop->PairCount();
    stats.pipesInUse += loop->PipesInUse();
    stats.pipesIdle += loop->PipesIdle();
    stats.bytesBuffered += loop->BytesBuffered();
    stats.readWritePairs += loop->ReadWritePairs();
    stats.readWriteFallbacks += loop->ReadWriteFallbacks();
    stats.recordingsDropped += loop->RecordingsDropped();
    stats.bytesAtoB += loop->BytesMoved(0);
    stats.bytesBtoA += loop->BytesMoved(1);
  }
  stats.recordQueuedBytes = writer_->QueuedBytes();
  stats.recorders = writer_->RecorderCount();
  stats.recordPipes = writer_->RecordPipes();
  return stats;
}

}  // namespace splicer
