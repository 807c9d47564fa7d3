#include "loop.h"
#include "syscall_error.h"
#include "worker_thread.h"
#include "uv_watch.h"

#include <fcntl.h>
#include <uv.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <utility>

namespace splicer {

namespace {

constexpr int kMaxEvents = 256;

// A wake token that is not a pair's tagged address.
char wakeToken;

bool IsReset(int error) { return error == ECONNRESET || error == EPIPE; }

uint64_t NowMs() { return MonotonicNs() / 1000000; }

void SetLingerZero(int fd) {
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

}  // namespace

Released::~Released() {
  for (int fd : this->fd) {
    if (fd >= 0) close(fd);
  }
}

uint64_t MonotonicNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

Loop::Loop(size_t maxPipes, size_t maxPipeSize, Writer* writer, Deliver deliver)
    : pipes_(maxPipes, maxPipeSize), writer_(writer), deliver_(std::move(deliver)) {}

// The thread is joined before the epoll and wake fds close (members, destroyed after this body).
Loop::~Loop() { Stop(); }

void Loop::Start() {
  epollFd_ = UniqueFd(epoll_create1(EPOLL_CLOEXEC));
  if (!epollFd_.Valid()) throw SyscallError(errno, "epoll_create1");
  wakeFd_ = UniqueFd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wakeFd_.Valid()) throw SyscallError(errno, "eventfd");
  struct epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.ptr = &wakeToken;
  if (epoll_ctl(epollFd_.Get(), EPOLL_CTL_ADD, wakeFd_.Get(), &ev) != 0) throw SyscallError(errno, "epoll_ctl");
  thread_ = StartWorkerThread([this] { Run(); });
  started_ = true;
}

void Loop::Add(std::unique_ptr<Pair> pair) {
  {
    std::lock_guard<std::mutex> lock(commandsMutex_);
    commands_.push_back(Command{Command::kAdd, std::move(pair), 0});
  }
  Wake();
}

void Loop::Abort(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(commandsMutex_);
    commands_.push_back(Command{Command::kAbort, nullptr, id});
  }
  Wake();
}

void Loop::Release(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(commandsMutex_);
    commands_.push_back(Command{Command::kRelease, nullptr, id});
  }
  Wake();
}

void Loop::StartInline(uv_loop_s* loop) {
  epollFd_ = UniqueFd(epoll_create1(EPOLL_CLOEXEC));
  if (!epollFd_.Valid()) throw SyscallError(errno, "epoll_create1");
  inlinePoll_ = WatchReadable(loop, epollFd_.Get(), this, [](uv_poll_t* handle, int, int) {
    if (handle->data != nullptr) static_cast<Loop*>(handle->data)->Turn(0);
  });
  inlineTimer_ = new uv_timer_t;
  uv_timer_init(loop, inlineTimer_);
  inlineTimer_->data = this;
  // Pairs in flight keep the process alive through the engine's completion channel, not these.
  uv_unref(reinterpret_cast<uv_handle_t*>(inlinePoll_));
  uv_unref(reinterpret_cast<uv_handle_t*>(inlineTimer_));
  started_ = true;
}

void Loop::Turn(int waitMs) {
  struct epoll_event events[kMaxEvents];
  int n = epoll_wait(epollFd_.Get(), events, kMaxEvents, waitMs);
  nowMs_ = NowMs();
  for (int i = 0; i < n; i++) {
    if (events[i].data.ptr == &wakeToken) {
      uint64_t count;
      ssize_t ignored = read(wakeFd_.Get(), &count, sizeof(count));
      (void)ignored;
      DrainCommands();
      continue;
    }
    uintptr_t tagged = static_cast<uintptr_t>(events[i].data.u64);
    HandleEvent(reinterpret_cast<Pair*>(tagged & ~uintptr_t{1}), static_cast<int>(tagged & 1), events[i].events);
  }
  RunReady();
  RunTimers();
  ended_.clear();
  Flush();
  if (inlinePoll_ != nullptr) ArmInlineTimer();
}

void Loop::ArmInlineTimer() {
  int timeout = NextTimeoutMs();
  if (timeout < 0) {
    uv_timer_stop(inlineTimer_);
    return;
  }
  uv_timer_start(inlineTimer_, [](uv_timer_t* timer) {
    if (timer->data != nullptr) static_cast<Loop*>(timer->data)->Turn(0);
  }, static_cast<uint64_t>(timeout), 0);
}

// As Run's end: pairs still running end as aborted, their completions delivered; then libuv
// lets go of the handles (their memory goes with their close callbacks).
void Loop::StopInline() {
  stopping_.store(true);
  AbortAll();
  CloseHandle(std::exchange(inlinePoll_, nullptr));
  CloseHandle(std::exchange(inlineTimer_, nullptr));
  joined_ = true;
}

void Loop::Stop() {
  if (!started_ || joined_) return;
  if (inlinePoll_ != nullptr) {
    StopInline();
    return;
  }
  stopping_.store(true);
  Wake();
  if (thread_.joinable()) thread_.join();
  joined_ = true;
}

void Loop::Wake() {
  if (inlinePoll_ != nullptr) {
    // Same thread: take the command now. No JS runs from here (completions go through the
    // engine's thread-safe function), so nothing can re-enter.
    DrainCommands();
    RunReady();
    ended_.clear();
    Flush();
    ArmInlineTimer();
    return;
  }
  uint64_t one = 1;
  ssize_t ignored = write(wakeFd_.Get(), &one, sizeof(one));
  (void)ignored;
}

void Loop::Run() {
  while (!stopping_.load()) Turn(NextTimeoutMs());
  AbortAll();
}

// Stopping: pairs still queued or running end as aborted, and their completions go out.
void Loop::AbortAll() {
  DrainCommands();
  std::vector<uint64_t> ids;
  ids.reserve(pairs_.size());
  for (auto& entry : pairs_) ids.push_back(entry.first);
  for (uint64_t id : ids) {
    auto it = pairs_.find(id);
    if (it != pairs_.end()) End(it->second.get(), EndReason::kAborted, 0, -1, nullptr);
  }
  ended_.clear();
  Flush();
}

void Loop::DrainCommands() {
  std::vector<Command> commands;
  {
    std::lock_guard<std::mutex> lock(commandsMutex_);
    commands.swap(commands_);
  }
  for (Command& command : commands) {
    if (command.type == Command::kAdd) {
      Adopt(std::move(command.pair));
      continue;
    }
    auto it = pairs_.find(command.id);
    if (it == pairs_.end()) continue;
    if (command.type == Command::kAbort) {
      End(it->second.get(), EndReason::kAborted, 0, -1, nullptr);
    } else {
      HandBack(it->second.get());
    }
  }
}

void Loop::Adopt(std::unique_ptr<Pair> owned) {
  Pair* pair = owned.get();
  pair->lastActivityMs = nowMs_ = NowMs();
  pairs_.emplace(pair->id, std::move(owned));
  pairCount_.fetch_add(1, std::memory_order_relaxed);
  bytesBuffered_.fetch_add(static_cast<int64_t>(pair->dir[0].bufferEnd + pair->dir[1].bufferEnd),
                           std::memory_order_relaxed);
  // Bytes Node had read enter the pair now, so they are recorded now, before anything else.
  for (int di = 0; di < 2 && pair->record; di++) {
    Direction& d = pair->dir[di];
    if (d.bufferEnd > d.bufferStart) RecordCopy(pair, di, d.buffer.get() + d.bufferStart, d.bufferEnd - d.bufferStart);
  }
  for (int side = 0; side < 2; side++) {
    struct epoll_event ev = {};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = reinterpret_cast<uintptr_t>(pair) | static_cast<uintptr_t>(side);
    if (epoll_ctl(epollFd_.Get(), EPOLL_CTL_ADD, pair->fd[side], &ev) != 0) {
      Fail(pair, side, errno, "epoll_ctl");
      return;
    }
  }
  if (pair->idleTimeoutMs > 0) timers_.push(Timer{nowMs_ + pair->idleTimeoutMs, pair->id});
  Pump(pair, 0);
  Pump(pair, 1);
}

void Loop::HandleEvent(Pair* pair, int side, uint32_t events) {
  if (pair->closed) return;
  if (events & EPOLLERR) {
    int error = 0;
    socklen_t len = sizeof(error);
    if (getsockopt(pair->fd[side], SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error != 0) {
      Fail(pair, side, error, "read");
      return;
    }
  }
  // dir[side] reads from this socket; dir[1 - side] writes to it. A direction
  // blocked on its destination ignores input (the destination's EPOLLOUT resumes
  // it), and output space matters only to a blocked direction: every pump that
  // could only end in EAGAIN is skipped.
  if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !pair->dir[side].blockedOnOutput) Pump(pair, side);
  if (!pair->closed && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && pair->dir[1 - side].blockedOnOutput) {
    Pump(pair, 1 - side);
  }
}

void Loop::RunTimers() {
  while (!timers_.empty() && timers_.top().deadlineMs <= nowMs_) {
    Timer timer = timers_.top();
    timers_.pop();
    auto it = pairs_.find(timer.id);
    if (it == pairs_.end()) continue;
    Pair* pair = it->second.get();
    uint64_t deadline = pair->lastActivityMs + pair->idleTimeoutMs;
    if (deadline <= nowMs_) {
      End(pair, EndReason::kTimeout, 0, -1, nullptr);
    } else {
      timers_.push(Timer{deadline, pair->id});
    }
  }
}

int Loop::NextTimeoutMs() {
  if (!ready_.empty()) return 0;
  if (timers_.empty()) return -1;
  uint64_t now = NowMs();
  uint64_t deadline = timers_.top().deadlineMs;
  return deadline <= now ? 0 : static_cast<int>(std::min<uint64_t>(deadline - now, 60000));
}

// A socket error on `side`: a reset there is passed on as a reset on the other side.
void Loop::Fail(Pair* pair, int side, int error, const char* syscall) {
  End(pair, IsReset(error) ? EndReason::kReset : EndReason::kError, error, side, syscall);
}

void Loop::End(Pair* pair, EndReason reason, int error, int side, const char* syscall) {
  if (pair->closed) return;
  pair->closed = true;
  switch (reason) {
    case EndReason::kEof:
    case EndReason::kTimeout:
      CloseFds(pair, false, false);
      break;
    case EndReason::kReset:
    case EndReason::kError:
      // The failed side is closed as it is; the other learns of it by a reset.
      CloseFds(pair, side == 1, side == 0);
      break;
    case EndReason::kAborted:
      CloseFds(pair, true, true);
      break;
    case EndReason::kReleased:  // HandBack's, never End's: its fds stay open
      break;
  }
  bool recordingDropped = EndRecording(pair, reason, side);
  Completion done;
  done.id = pair->id;
  done.bytesAtoB = pair->dir[0].bytes;
  done.bytesBtoA = pair->dir[1].bytes;
  done.durationMs = static_cast<double>(MonotonicNs() - pair->startNs) / 1e6;
  done.reason = reason;
  done.error = error;
  done.side = side;
  done.syscall = syscall;
  done.recordingDropped = recordingDropped;
  completions_.push_back(std::move(done));
  Forget(pair);
}

// The pair leaves this loop alive: out of epoll, its fds, unsent bytes and recording state
// go to JS in the completion. Nothing is closed and nothing is lost: the bytes in the pipe are
// read out (the pipe goes back to the pool empty), and the kernel keeps whatever the sockets
// received since.
void Loop::HandBack(Pair* pair) {
  if (pair->closed) return;
  pair->closed = true;
  auto released = std::make_shared<Released>();
  for (int di = 0; di < 2; di++) {
    Direction& d = pair->dir[di];
    std::string& pending = released->pending[di];
    if (d.bufferEnd > d.bufferStart) pending.assign(d.buffer.get() + d.bufferStart, d.bufferEnd - d.bufferStart);
    d.bufferStart = d.bufferEnd = 0;
    bool intact = true;
    while (d.inPipe > 0) {
      size_t at = pending.size();
      pending.resize(at + d.inPipe);
      ssize_t n = read(d.pipe->readFd, &pending[at], d.inPipe);
      if (n < 0 && errno == EINTR) {
        pending.resize(at);
        continue;
      }
      if (n <= 0) {
        // Cannot happen to a pipe this loop filled and alone reads; were it to, the bytes left
        // in it are lost with the pipe, which is destroyed rather than reused.
        pending.resize(at);
        intact = false;
        break;
      }
      pending.resize(at + static_cast<size_t>(n));
      d.inPipe -= static_cast<size_t>(n);
    }
    bytesBuffered_.fetch_sub(static_cast<int64_t>(pending.size() + d.inPipe), std::memory_order_relaxed);
    if (d.pipe != nullptr) {
      if (intact && d.inPipe == 0) pipes_.Release(d.pipe); else pipes_.Destroy(d.pipe);
      d.pipe = nullptr;
      d.inPipe = 0;
    }
    released->ended[di] = d.sourceEof;
    released->finished[di] = d.done;
  }
  for (int side = 0; side < 2; side++) {
    epoll_ctl(epollFd_.Get(), EPOLL_CTL_DEL, pair->fd[side], nullptr);
    released->fd[side] = pair->fd[side];
    pair->fd[side] = -1;
  }
  Completion done;
  done.id = pair->id;
  done.bytesAtoB = pair->dir[0].bytes;
  done.bytesBtoA = pair->dir[1].bytes;
  done.durationMs = static_cast<double>(MonotonicNs() - pair->startNs) / 1e6;
  done.reason = EndReason::kReleased;
  done.recordingDropped = HandBackRecording(pair, released.get());
  done.released = std::move(released);
  completions_.push_back(std::move(done));
  Forget(pair);
}

void Loop::Forget(Pair* pair) {
  auto it = pairs_.find(pair->id);
  if (it != pairs_.end()) {
    ended_.push_back(std::move(it->second));
    pairs_.erase(it);
  }
  pairCount_.fetch_sub(1, std::memory_order_relaxed);
  if (pair->countedReadWrite) readWritePairs_.fetch_sub(1, std::memory_order_relaxed);
}

void Loop::CloseFds(Pair* pair, bool resetA, bool resetB) {
  for (int di = 0; di < 2; di++) {
    Direction& d = pair->dir[di];
    int64_t pending = static_cast<int64_t>(d.inPipe + (d.bufferEnd - d.bufferStart));
    if (pending) bytesBuffered_.fetch_sub(pending, std::memory_order_relaxed);
    if (d.pipe != nullptr) {
      // A pipe that still holds bytes is never reused.
      if (d.inPipe > 0) pipes_.Destroy(d.pipe); else pipes_.Release(d.pipe);
      d.pipe = nullptr;
      d.inPipe = 0;
    }
    d.bufferStart = d.bufferEnd = 0;
  }
  bool reset[2] = {resetA, resetB};
  for (int side = 0; side < 2; side++) {
    int fd = pair->fd[side];
    if (fd < 0) continue;
    // Delete before close: Node may still hold its own fd for the same socket,
    // and epoll keys registrations by open file, not by fd.
    epoll_ctl(epollFd_.Get(), EPOLL_CTL_DEL, fd, nullptr);
    if (reset[side]) SetLingerZero(fd);
    close(fd);
    pair->fd[side] = -1;
  }
}

void Loop::Flush() {
  if (completions_.empty()) return;
  std::vector<Completion> batch;
  batch.swap(completions_);
  deliver_(std::move(batch));
}

}  // namespace splicer
