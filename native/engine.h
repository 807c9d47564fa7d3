// An engine: N loop threads. Takes pairs of fds from JS (duplicating them, so
// Node can close its own), spreads them over its loops, and reports each
// pair's end through a single delivery callback called on the loop thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "loop.h"

namespace splicer {

struct EngineOptions {
  size_t threads = 1;
  size_t maxPipes = 256;
  size_t maxPipeSize = 1024 * 1024;
};

struct EngineStats {
  size_t pairs = 0;
  size_t pipesInUse = 0;
  size_t pipesIdle = 0;
  int64_t bytesBuffered = 0;
  size_t readWritePairs = 0;
  uint64_t readWriteFallbacks = 0;
};

class Engine {
 public:
  Engine(const EngineOptions& options, Loop::Deliver deliver);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Duplicates both fds and hands the pair to a loop. Returns the pair id.
  // On failure returns 0 and sets *error to the errno of the failed dup;
  // nothing is left open.
  uint64_t Add(int fdA, int fdB, const char* headAtoB, size_t headAtoBLength, const char* headBtoA,
               size_t headBtoALength, uint64_t idleTimeoutMs, int* error);
  void Abort(uint64_t id);
  // Aborts every pair, delivers completions, joins the threads. Idempotent.
  void Close();
  bool Closed() const { return closed_; }
  EngineStats Stats() const;

 private:
  std::vector<std::unique_ptr<Loop>> loops_;
  std::atomic<uint64_t> nextId_{1};
  bool closed_ = false;
};

}  // namespace splicer
