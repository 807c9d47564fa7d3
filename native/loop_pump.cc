// The splice pump of a loop: moving one direction's bytes, and the ready list that keeps a
// busy pair from starving the others.
#include "loop.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace splicer {

namespace {

constexpr size_t kReadWriteBufferSize = 64 * 1024;
// Fills per pump before yielding to other pairs: fairness among busy pairs.
constexpr int kRoundsPerPump = 16;
constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

// splice() refusing this kind of fd: carry the pair with read/write instead.
bool SpliceUnsupported(int error) { return error == EINVAL || error == ENOSYS || error == EBADF; }

}  // namespace

// Moves bytes for one direction until the source is empty, the destination is
// full, or the round budget is spent. The pipe is drained before it is filled
// again, so EAGAIN from the source always means "socket empty", never "pipe full",
// and a full destination stops reads from its source (backpressure).
void Loop::Pump(Pair* pair, int di) {
  Direction& d = pair->dir[di];
  if (pair->closed || d.done) return;
  for (int round = 0;; round++) {
    if (!FlushBuffer(pair, di) || !FlushPipe(pair, di)) return;
    if (d.sourceEof) {
      // Every byte in flight is written: pass the FIN on.
      if (shutdown(pair->fd[1 - di], SHUT_WR) != 0 && errno != ENOTCONN) {
        Fail(pair, 1 - di, errno, "shutdown");
        return;
      }
      d.done = true;
      if (pair->record) RecordFin(pair, di);
      if (pair->dir[1 - di].done) End(pair, EndReason::kEof, 0, -1, nullptr);
      return;
    }
    if (round >= kRoundsPerPump) {
      if (!d.scheduled) {
        d.scheduled = true;
        ready_.emplace_back(pair->id, di);
      }
      return;
    }
    if (!Fill(pair, di)) return;
  }
}

// Writes the user-space buffer out. False when the pump must stop here.
bool Loop::FlushBuffer(Pair* pair, int di) {
  Direction& d = pair->dir[di];
  int dst = pair->fd[1 - di];
  while (d.bufferStart < d.bufferEnd) {
    ssize_t n = send(dst, d.buffer.get() + d.bufferStart, d.bufferEnd - d.bufferStart, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) d.blockedOnOutput = true; else Fail(pair, 1 - di, errno, "write");
      return false;
    }
    d.bufferStart += static_cast<size_t>(n);
    d.bytes += static_cast<uint64_t>(n);
    bytesMoved_[di].fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    bytesBuffered_.fetch_sub(n, std::memory_order_relaxed);
    Touch(pair);
  }
  d.bufferStart = d.bufferEnd = 0;
  // The head Node had read is written: a spliced direction needs no buffer any more.
  if (!d.readWrite && d.buffer) {
    d.buffer.reset();
    d.bufferSize = 0;
  }
  return true;
}

// Splices the pipe out to the destination; an emptied pipe goes back to the pool.
bool Loop::FlushPipe(Pair* pair, int di) {
  Direction& d = pair->dir[di];
  int dst = pair->fd[1 - di];
  while (d.inPipe > 0) {
    ssize_t n = splice(d.pipe->readFd, nullptr, dst, nullptr, d.inPipe, kSpliceFlags);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) d.blockedOnOutput = true; else Fail(pair, 1 - di, errno, "splice");
      return false;
    }
    d.inPipe -= static_cast<size_t>(n);
    d.bytes += static_cast<uint64_t>(n);
    bytesMoved_[di].fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    bytesBuffered_.fetch_sub(n, std::memory_order_relaxed);
    Touch(pair);
  }
  if (d.pipe != nullptr) {
    pipes_.Release(d.pipe);
    d.pipe = nullptr;
  }
  d.blockedOnOutput = false;
  return true;
}

// Reads once from the source into a pipe (or the buffer). False when the pump
// must stop: the source is empty (EAGAIN) or the pair ended.
bool Loop::Fill(Pair* pair, int di) {
  Direction& d = pair->dir[di];
  int src = pair->fd[di];
  if (!d.readWrite) {
    Pipe* pipe = pipes_.Acquire();
    if (pipe == nullptr) {
      d.readWrite = true;
    } else {
      if (d.streak >= 2) pipes_.Grow(pipe);
      ssize_t n;
      do {
        n = splice(src, nullptr, pipe->writeFd, nullptr, pipe->capacity, kSpliceFlags);
      } while (n < 0 && errno == EINTR);
      if (n > 0) {
        d.pipe = pipe;
        d.inPipe = static_cast<size_t>(n);
        if (d.streak < UINT8_MAX) d.streak++;
        bytesBuffered_.fetch_add(n, std::memory_order_relaxed);
        // The pipe was empty before this fill: a tee now copies exactly the bytes just read.
        if (pair->record) RecordSpliced(pair, di, static_cast<size_t>(n));
        return true;
      }
      int error = errno;
      pipes_.Release(pipe);
      if (n == 0) {
        d.sourceEof = true;
        return true;
      }
      if (error == EAGAIN) {
        d.streak = 0;
        return false;
      }
      if (!SpliceUnsupported(error)) {
        Fail(pair, di, error, "splice");
        return false;
      }
      d.readWrite = true;
    }
    if (!pair->countedReadWrite) {
      pair->countedReadWrite = true;
      readWritePairs_.fetch_add(1, std::memory_order_relaxed);
      readWriteFallbacks_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // Empty here (the pump flushed it before filling): a head buffer is replaced.
  if (d.bufferSize < kReadWriteBufferSize) {
    d.buffer.reset(new char[kReadWriteBufferSize]);
    d.bufferSize = kReadWriteBufferSize;
  }
  ssize_t n;
  do {
    n = recv(src, d.buffer.get(), d.bufferSize, 0);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    d.bufferStart = 0;
    d.bufferEnd = static_cast<size_t>(n);
    bytesBuffered_.fetch_add(n, std::memory_order_relaxed);
    if (pair->record) RecordCopy(pair, di, d.buffer.get(), static_cast<size_t>(n));
    return true;
  }
  if (n == 0) {
    d.sourceEof = true;
    return true;
  }
  if (errno != EAGAIN) Fail(pair, di, errno, "read");
  return false;
}

void Loop::RunReady() {
  // Pumps that ran out of budget continue here, after every other pair had its turn.
  while (!ready_.empty()) {
    std::vector<std::pair<uint64_t, int>> batch;
    batch.swap(ready_);
    for (auto& [id, di] : batch) {
      auto it = pairs_.find(id);
      if (it == pairs_.end()) continue;
      it->second->dir[di].scheduled = false;
      Pump(it->second.get(), di);
    }
    // One round per wake: new entries wait for the next epoll_wait(0) so events are not starved.
    break;
  }
}

}  // namespace splicer
