// The writer thread: every file's queue written entry by entry, so records never interleave;
// a write error stops that recorder only.
#include "recorder.h"
#include "syscall_error.h"
#include "worker_thread.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace splicer {

namespace {

// Bytes one recorder may write per round before the others get their turn.
constexpr size_t kBytesPerRound = 4 * 1024 * 1024;
constexpr size_t kCopyBufferSize = 64 * 1024;

}  // namespace

Writer::Writer(size_t maxQueuedBytes, Deliver deliver)
    : maxQueuedBytes_(maxQueuedBytes), deliver_(std::move(deliver)) {}

Writer::~Writer() { Stop(); }

void Writer::StartLocked() {
  if (!wakeFd_.Valid()) wakeFd_ = UniqueFd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wakeFd_.Valid()) throw SyscallError(errno, "eventfd");
  // A FIFO whose reader left fails the write with EPIPE, which stops that recorder.
  thread_ = StartWorkerThread([this] { Run(); });
  started_ = true;
}

void Writer::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopped_) return;
    stopped_ = true;
    stopping_ = true;
    if (started_) {
      uint64_t one = 1;
      ssize_t ignored = write(wakeFd_.Get(), &one, sizeof(one));
      (void)ignored;
    }
  }
  if (thread_.joinable()) thread_.join();
}

void Writer::Run() {
  std::vector<std::shared_ptr<Recorder>> work;
  std::vector<std::shared_ptr<Recorder>> closing;
  std::vector<struct pollfd> fds;
  std::vector<Recorder*> polled;
  for (;;) {
    work.clear();
    closing.clear();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) break;
      for (auto it = recorders_.begin(); it != recorders_.end();) {
        Recorder* r = it->second.get();
        if (r->closeRequested_ && r->users_ == 0 && (r->queue_.empty() || r->failed_)) {
          closing.push_back(it->second);
          it = recorders_.erase(it);
          continue;
        }
        if (!r->queue_.empty() && !r->failed_) work.push_back(it->second);
        ++it;
      }
    }
    for (auto& r : closing) CloseFile(r.get(), !r->failed_);

    bool ready = false;
    fds.clear();
    polled.clear();
    fds.push_back({wakeFd_.Get(), POLLIN, 0});
    for (auto& r : work) {
      Progress progress = Drain(r.get(), kBytesPerRound);
      if (progress == Progress::kBudget) {
        ready = true;
      } else if (progress == Progress::kBlocked) {
        fds.push_back({r->fd_, POLLOUT, 0});
        polled.push_back(r.get());
      }
    }
    Flush();
    {
      // Decided under the lock that Enqueue takes: an entry queued after this look finds
      // sleeping_ set and wakes the poll below.
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) break;
      for (auto& entry : recorders_) {
        Recorder* r = entry.second.get();
        if ((!r->queue_.empty() && !r->failed_ && !r->blocked_) ||
            (r->closeRequested_ && r->users_ == 0 && (r->queue_.empty() || r->failed_))) {
          ready = true;
        }
      }
      sleeping_ = !ready;
    }
    int n;
    do {
      n = poll(fds.data(), fds.size(), ready ? 0 : -1);
    } while (n < 0 && errno == EINTR);
    if (fds[0].revents & POLLIN) {
      uint64_t count;
      ssize_t ignored = read(wakeFd_.Get(), &count, sizeof(count));
      (void)ignored;
    }
    for (size_t i = 1; i < fds.size(); i++) {
      if (fds[i].revents != 0) polled[i - 1]->blocked_ = false;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    sleeping_ = false;
  }

  // Engine close: write what the files take without blocking (all of it, for a regular file),
  // then close them. A file that blocks forever cannot hold the engine up.
  std::vector<std::shared_ptr<Recorder>> all;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& entry : recorders_) all.push_back(entry.second);
    recorders_.clear();
  }
  for (auto& r : all) {
    r->blocked_ = false;
    Progress progress = r->failed_ ? Progress::kFailed : Drain(r.get(), SIZE_MAX);
    std::deque<RecordEntry> dropped;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const RecordEntry& entry : r->queue_) queued_.fetch_sub(entry.Size(), std::memory_order_relaxed);
      dropped.swap(r->queue_);
    }
    CloseFile(r.get(), progress == Progress::kEmpty && !r->failed_);
  }
  Flush();
}

Writer::Progress Writer::Drain(Recorder* r, size_t budget) {
  size_t written = 0;
  for (;;) {
    RecordEntry* entry;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (r->failed_) return Progress::kFailed;
      if (r->queue_.empty()) return Progress::kEmpty;
      entry = &r->queue_.front();
    }
    if (!WriteEntry(r, *entry)) return r->failed_ ? Progress::kFailed : Progress::kBlocked;
    RecordEntry done;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done = std::move(r->queue_.front());
      r->queue_.pop_front();
      queued_.fetch_sub(done.Size(), std::memory_order_relaxed);
    }
    r->bytesDone_ = r->payloadDone_ = 0;
    written += done.Size();
    if (written >= budget) return Progress::kBudget;
    // `done` (and maybe the last reference to its pipe) goes here, outside the lock.
  }
}

// Writes data[*done .. length) to the file, advancing *done; false when blocked (EAGAIN, the
// recorder waits for POLLOUT) or failed (the recorder stops).
bool Writer::WriteAll(Recorder* r, const char* data, size_t length, size_t* done) {
  while (*done < length) {
    ssize_t n = write(r->fd_, data + *done, length - *done);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        r->blocked_ = true;
      } else {
        Fail(r, errno, "write");
      }
      return false;
    }
    *done += static_cast<size_t>(n);
  }
  return true;
}

// False when the entry could not be written whole: blocked (EAGAIN) or failed.
bool Writer::WriteEntry(Recorder* r, RecordEntry& entry) {
  if (!WriteAll(r, entry.bytes.data(), entry.bytes.size(), &r->bytesDone_)) return false;
  while (!r->noSplice_ && r->payloadDone_ < entry.payload) {
    ssize_t n = splice(entry.pipe->readFd, nullptr, r->fd_, nullptr, entry.payload - r->payloadDone_,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) {
      if (errno == EINTR) continue;
      // The payload was teed in before its entry was queued, so EAGAIN is the file, never the pipe.
      if (errno == EAGAIN) {
        r->blocked_ = true;
        return false;
      }
      // A file opened with O_APPEND, or a file system without splice_write: copy instead.
      if (errno == EINVAL) {
        r->noSplice_ = true;
        break;
      }
      Fail(r, errno, "splice");
      return false;
    }
    if (n == 0) {
      Fail(r, EIO, "splice");
      return false;
    }
    r->payloadDone_ += static_cast<size_t>(n);
    entry.pipe->consumed.fetch_add(static_cast<size_t>(n), std::memory_order_relaxed);
  }
  if (r->noSplice_) return CopyPayload(r, entry);
  return true;
}

bool Writer::CopyPayload(Recorder* r, RecordEntry& entry) {
  if (r->scratch_.size() < kCopyBufferSize) r->scratch_.resize(kCopyBufferSize);
  for (;;) {
    if (!WriteAll(r, r->scratch_.data(), r->scratchEnd_, &r->scratchStart_)) return false;
    r->scratchStart_ = r->scratchEnd_ = 0;
    if (r->payloadDone_ >= entry.payload) return true;
    size_t want = std::min(r->scratch_.size(), entry.payload - r->payloadDone_);
    ssize_t n = read(entry.pipe->readFd, r->scratch_.data(), want);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      Fail(r, n < 0 ? errno : EIO, "read");
      return false;
    }
    r->scratchEnd_ = static_cast<size_t>(n);
    r->payloadDone_ += static_cast<size_t>(n);
    entry.pipe->consumed.fetch_add(static_cast<size_t>(n), std::memory_order_relaxed);
  }
}

// A write error stops the recorder: what is queued is dropped, pairs recording into it stop
// (their next Enqueue fails), and JS hears of it at once. The file stays open until JS closes it.
void Writer::Fail(Recorder* r, int error, const char* syscall) {
  std::deque<RecordEntry> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    r->failed_ = true;
    for (const RecordEntry& entry : r->queue_) queued_.fetch_sub(entry.Size(), std::memory_order_relaxed);
    dropped.swap(r->queue_);
  }
  r->bytesDone_ = r->payloadDone_ = 0;
  r->scratchStart_ = r->scratchEnd_ = 0;
  RecorderEvent event;
  event.type = RecorderEvent::kFailed;
  event.recorder = r->id;
  event.error = error;
  event.syscall = syscall;
  events_.push_back(event);
}

void Writer::CloseFile(Recorder* r, bool complete) {
  if (r->fd_ >= 0) {
    close(r->fd_);
    r->fd_ = -1;
  }
  recorderCount_.fetch_sub(1, std::memory_order_relaxed);
  RecorderEvent event;
  event.type = RecorderEvent::kClosed;
  event.recorder = r->id;
  event.complete = complete;
  events_.push_back(event);
}

void Writer::Flush() {
  if (events_.empty()) return;
  std::vector<RecorderEvent> batch;
  batch.swap(events_);
  deliver_(std::move(batch));
}

}  // namespace splicer
