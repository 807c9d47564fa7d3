// The recorders' queue: record pipes, the files JS opens, and the entries JS and the loops queue
// for the writer thread, bounded in bytes across the engine.
#include "recorder.h"
#include "syscall_error.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace splicer {

RecordPipe::RecordPipe(int readFd, int writeFd, size_t capacity, std::atomic<size_t>* live)
    : readFd(readFd), writeFd(writeFd), capacity(capacity), live_(live) {
  live_->fetch_add(1, std::memory_order_relaxed);
}

RecordPipe::~RecordPipe() {
  close(readFd);
  close(writeFd);
  live_->fetch_sub(1, std::memory_order_relaxed);
}

std::shared_ptr<RecordPipe> RecordPipe::Create(size_t size, std::atomic<size_t>* live) {
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return nullptr;
  // EPERM (over pipe-max-size or the user's pipe budget) keeps the default size; a fill too
  // big for it then drops the recording, never the traffic.
  fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(size));
  int got = fcntl(fds[1], F_GETPIPE_SZ);
  return std::make_shared<RecordPipe>(fds[0], fds[1], got > 0 ? static_cast<size_t>(got) : 4096, live);
}

uint64_t Writer::Open(int fd, int* error, const char** syscall) {
  *syscall = "dup";
  int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) {
    *error = errno;
    return 0;
  }
  struct stat st;
  if (fstat(own, &st) == 0 && !S_ISREG(st.st_mode)) {
    // A FIFO, socket or device may block forever; the writer waits for it in poll() instead.
    int flags = fcntl(own, F_GETFL);
    if (flags >= 0 && !(flags & O_NONBLOCK)) fcntl(own, F_SETFL, flags | O_NONBLOCK);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) {
    close(own);
    *error = EBADF;
    *syscall = "openRecorder";
    return 0;
  }
  if (!started_) {
    try {
      StartLocked();
    } catch (const SyscallError& err) {
      close(own);
      *error = err.Errno() != 0 ? err.Errno() : EAGAIN;
      *syscall = err.Syscall();
      return 0;
    }
  }
  uint64_t id = nextId_.fetch_add(1);
  recorders_.emplace(id, std::make_shared<Recorder>(id, own));
  recorderCount_.fetch_add(1, std::memory_order_relaxed);
  return id;
}

bool Writer::Write(uint64_t id, const char* data, size_t length) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = recorders_.find(id);
  if (it == recorders_.end() || stopping_) return false;
  Recorder* r = it->second.get();
  if (r->failed_ || r->closeRequested_) return false;
  if (length == 0) return true;
  if (queued_.load(std::memory_order_relaxed) + length > maxQueuedBytes_) return false;
  RecordEntry entry;
  entry.bytes.assign(data, length);
  r->queue_.push_back(std::move(entry));
  queued_.fetch_add(length, std::memory_order_relaxed);
  WakeLocked();
  return true;
}

void Writer::Close(uint64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = recorders_.find(id);
  if (it == recorders_.end() || it->second->closeRequested_) return;
  it->second->closeRequested_ = true;
  WakeLocked();
}

std::shared_ptr<Recorder> Writer::Acquire(uint64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = recorders_.find(id);
  if (it == recorders_.end() || it->second->closeRequested_ || stopping_) return nullptr;
  it->second->users_++;
  return it->second;
}

void Writer::ReleaseUser(const std::shared_ptr<Recorder>& recorder) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (--recorder->users_ == 0 && recorder->closeRequested_) WakeLocked();
}

bool Writer::HasRoom(size_t bytes) const {
  return queued_.load(std::memory_order_relaxed) + bytes <= maxQueuedBytes_;
}

bool Writer::Enqueue(Recorder* recorder, std::vector<RecordEntry>&& entries) {
  size_t total = 0;
  for (const RecordEntry& entry : entries) total += entry.Size();
  std::lock_guard<std::mutex> lock(mutex_);
  if (recorder->failed_ || stopping_) return false;
  if (queued_.load(std::memory_order_relaxed) + total > maxQueuedBytes_) return false;
  for (RecordEntry& entry : entries) recorder->queue_.push_back(std::move(entry));
  queued_.fetch_add(total, std::memory_order_relaxed);
  WakeLocked();
  return true;
}

// Only a thread that sleeps needs the eventfd: one write per wake, not per entry.
void Writer::WakeLocked() {
  if (!started_ || !sleeping_) return;
  sleeping_ = false;
  uint64_t one = 1;
  ssize_t ignored = write(wakeFd_.Get(), &one, sizeof(one));
  (void)ignored;
}

}  // namespace splicer
