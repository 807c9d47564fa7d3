// An engine: N loop threads and one pcap writer thread. Takes pairs of fds from JS
// (duplicating them, so Node can close its own), spreads them over its loops, and reports
// each pair's end through a delivery callback called on the loop thread; recorder events
// come through another, called on the writer thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "loop.h"

namespace splicer {

struct EngineOptions {
  size_t threads = 1;  // 0: one loop on the JS thread (Loop::StartInline on `jsLoop`)
  size_t maxPipes = 256;
  size_t maxPipeSize = 1024 * 1024;
  size_t recordBufferBytes = 64 * 1024 * 1024;  // recorded bytes waiting for the writer, all files
};

// What a pair records: the file (already counted as used by this pair) and its legs.
struct RecordSpec {
  std::shared_ptr<Recorder> recorder;
  std::vector<Conversation> legs;
};

struct EngineStats {
  size_t pairs = 0;
  size_t pipesInUse = 0;
  size_t pipesIdle = 0;
  int64_t bytesBuffered = 0;
  size_t readWritePairs = 0;
  uint64_t readWriteFallbacks = 0;
  uint64_t recordingsDropped = 0;
  size_t recordQueuedBytes = 0;
  size_t recorders = 0;
  size_t recordPipes = 0;
  uint64_t bytesAtoB = 0;  // written by every pair since the engine started, live pairs included
  uint64_t bytesBtoA = 0;
};

class Engine {
 public:
  // Starts options.threads loops. Throws SyscallError when a loop cannot get its epoll set,
  // eventfd or thread; the loops already started are stopped and joined and every fd they
  // opened is closed before the exception leaves (the members' destructors do it).
  Engine(const EngineOptions& options, Loop::Deliver deliver, Writer::Deliver deliverRecorderEvents,
         uv_loop_s* jsLoop = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Duplicates both fds and hands the pair to a loop. Returns the pair id.
  // On failure returns 0 and sets *error to the errno of the failed dup;
  // nothing is left open and the recorder's use is given back.
  // `adopt`: the fds themselves are taken (no dup, so no failure): they are the engine's now.
  uint64_t Add(int fdA, int fdB, const char* headAtoB, size_t headAtoBLength, const char* headBtoA,
               size_t headBtoALength, uint64_t idleTimeoutMs, RecordSpec* record, int* error, bool adopt = false);
  // Both go to the pair's own loop only; unknown or finished ids are ignored there.
  void Abort(uint64_t id);
  void Release(uint64_t id);
  Writer& Recorders() { return *writer_; }
  // Aborts every pair, delivers completions, joins the threads. Idempotent.
  void Close();
  bool Closed() const { return closed_; }
  EngineStats Stats() const;

 private:
  // Declared first, destroyed last: pairs hold recorders until their loop is gone.
  std::unique_ptr<Writer> writer_;
  std::vector<std::unique_ptr<Loop>> loops_;
  // A pair lives on loops_[id % loops_.size()] for its whole life: Add, Abort and Release agree.
  Loop& LoopOf(uint64_t id) { return *loops_[id % loops_.size()]; }
  std::atomic<uint64_t> nextId_{1};
  bool closed_ = false;
};

}  // namespace splicer
