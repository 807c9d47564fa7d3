#include "pipe_pool.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace splicer {

PipePool::PipePool(size_t maxPipes, size_t maxPipeSize)
    : maxPipes_(maxPipes), maxPipeSize_(maxPipeSize), maxIdle_(std::min<size_t>(maxPipes, 64)) {}

PipePool::~PipePool() {
  for (Pipe* pipe : idle_) ClosePipe(pipe);
  idle_.clear();
}

Pipe* PipePool::Acquire() {
  if (!idle_.empty()) {
    Pipe* pipe = idle_.back();
    idle_.pop_back();
    idleCount_.fetch_sub(1, std::memory_order_relaxed);
    inUse_.fetch_add(1, std::memory_order_relaxed);
    return pipe;
  }
  if (InUse() >= maxPipes_) return nullptr;
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return nullptr;
  Pipe* pipe = new Pipe();
  pipe->readFd = fds[0];
  pipe->writeFd = fds[1];
  int size = fcntl(fds[0], F_GETPIPE_SZ);
  pipe->capacity = size > 0 ? static_cast<size_t>(size) : 4096;
  pipe->cannotGrow = pipe->capacity >= maxPipeSize_;
  inUse_.fetch_add(1, std::memory_order_relaxed);
  return pipe;
}

void PipePool::Release(Pipe* pipe) {
  inUse_.fetch_sub(1, std::memory_order_relaxed);
  if (idle_.size() >= maxIdle_) {
    ClosePipe(pipe);
    return;
  }
  idle_.push_back(pipe);
  idleCount_.fetch_add(1, std::memory_order_relaxed);
}

void PipePool::Destroy(Pipe* pipe) {
  inUse_.fetch_sub(1, std::memory_order_relaxed);
  ClosePipe(pipe);
}

void PipePool::Grow(Pipe* pipe) {
  if (pipe->cannotGrow) return;
  size_t want = std::min(pipe->capacity * 2, maxPipeSize_);
  int got = fcntl(pipe->writeFd, F_SETPIPE_SZ, static_cast<int>(want));
  if (got > 0) {
    pipe->capacity = static_cast<size_t>(got);
    if (pipe->capacity >= maxPipeSize_) pipe->cannotGrow = true;
  } else {
    // EPERM: over /proc/sys/fs/pipe-max-size or the user's pipe budget. Keep the size.
    pipe->cannotGrow = true;
  }
}

void PipePool::ClosePipe(Pipe* pipe) {
  if (pipe->readFd >= 0) close(pipe->readFd);
  if (pipe->writeFd >= 0) close(pipe->writeFd);
  delete pipe;
}

}  // namespace splicer
