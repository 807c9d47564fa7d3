// A bounded pool of kernel pipes for one loop thread (no locking: only that
// thread touches it). A direction holds a pipe only while bytes are in it, so
// an idle pair holds none; an empty pipe goes back to the pool and keeps the
// size it grew to.
#pragma once

#include <atomic>
#include <cstddef>
#include <vector>

namespace splicer {

struct Pipe {
  int readFd = -1;
  int writeFd = -1;
  size_t capacity = 0;
  bool cannotGrow = false;
};

class PipePool {
 public:
  PipePool(size_t maxPipes, size_t maxPipeSize);
  ~PipePool();
  PipePool(const PipePool&) = delete;
  PipePool& operator=(const PipePool&) = delete;

  // An empty pipe, or nullptr when the bound is reached or pipe2() fails.
  Pipe* Acquire();
  // Back to the pool; the pipe must be empty.
  void Release(Pipe* pipe);
  // Closes a pipe that still holds bytes (its destination died): never reused.
  void Destroy(Pipe* pipe);
  // Doubles the capacity up to the maximum. EPERM (over pipe-max-size or the
  // user's pipe page budget) marks the pipe as staying at its size.
  void Grow(Pipe* pipe);

  size_t InUse() const { return inUse_.load(std::memory_order_relaxed); }
  size_t Idle() const { return idleCount_.load(std::memory_order_relaxed); }

 private:
  static void ClosePipe(Pipe* pipe);

  const size_t maxPipes_;
  const size_t maxPipeSize_;
  const size_t maxIdle_;
  std::vector<Pipe*> idle_;
  std::atomic<size_t> inUse_{0};
  std::atomic<size_t> idleCount_{0};
};

}  // namespace splicer
