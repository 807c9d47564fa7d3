#include "mux_session.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "mux_stream.h"
#include "syscall_error.h"
#include "uv_watch.h"

namespace splicer {

namespace {

constexpr uint32_t kSessionTag = 0;  // stream ids start at 1
constexpr size_t kReadBudget = 4 << 20;  // per turn, so that the session's reading cannot starve the rest
constexpr size_t kPongQueueLimit = 1 << 20;
// How long one frame may hold the session's reading while its stream's pipe and socket are full.
// A reader that keeps up drains them within it, and its bytes stay in the kernel; past it the stream
// counts as slow and its payload goes to its overflow until it has caught up, so that a stalled
// reader delays the other streams once, by this much, and never stops them.
constexpr uint64_t kStallNs = 10 * 1000 * 1000;
// ReadPayload's "wait for the stream socket": not an error, the session is paused.
constexpr ssize_t kStalled = -100000;

}  // namespace

MuxSession::MuxSession(uv_loop_t* loop, int fd, std::string head, const MuxOptions& options, MuxSessionEvents* events)
    : loop_(loop),
      options_(options),
      events_(events),
      fd_(fd),
      pipes_(std::make_unique<PipePool>(1 << 20, options.maxPipeSize)),
      nextId_(options.client ? 1 : 2),
      head_(std::move(head)) {
  epollFd_ = UniqueFd(epoll_create1(EPOLL_CLOEXEC));
  if (!epollFd_.Valid()) throw SyscallError(errno, "epoll_create1");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof(one));
  poll_ = WatchReadable(loop, epollFd_.Get(), this, [](uv_poll_t* handle, int, int) {
    if (handle->data != nullptr) static_cast<MuxSession*>(handle->data)->OnReady();
  });
  deliverTimer_ = new uv_timer_t;
  uv_timer_init(loop, deliverTimer_);
  deliverTimer_->data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(deliverTimer_));
  stallTimer_ = new uv_timer_t;
  uv_timer_init(loop, stallTimer_);
  stallTimer_->data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(stallTimer_));
  UpdateSessionWatch();
  if (head_.size() > 0) DeliverSoon();  // parse what Node had read without waiting for more
}

MuxSession::~MuxSession() {
  if (!closed_) {
    closed_ = true;
    for (auto& entry : streams_) {
      Stream* s = entry.second.get();
      if (s->fd >= 0) close(s->fd);
      if (s->outPipe != nullptr) pipes_->Destroy(s->outPipe);
      if (s->inPipe != nullptr) pipes_->Destroy(s->inPipe);
    }
    streams_.clear();
  }
  if (framePipe_ != nullptr) pipes_->Destroy(framePipe_);
  if (poll_ != nullptr) CloseHandle(poll_);
  if (deliverTimer_ != nullptr) CloseHandle(deliverTimer_);
  if (stallTimer_ != nullptr) CloseHandle(stallTimer_);
}

// ---- events in ----

void MuxSession::OnReady() {
  epoll_event events[64];
  int n = epoll_wait(epollFd_.Get(), events, 64, 0);
  for (int i = 0; i < n && !closed_; i++) Dispatch(events[i].data.u32, events[i].events);
  if (!closed_ && headAt_ < head_.size()) ReadSession();
  PumpSend();
  Deliver();
}

void MuxSession::Dispatch(uint32_t tag, uint32_t events) {
  if (tag == kSessionTag) {
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ReadSession();
    if (!closed_ && (events & (EPOLLOUT | EPOLLERR))) PumpSend();
    return;
  }
  auto it = streams_.find(tag);
  if (it == streams_.end()) return;
  Stream* s = it->second.get();
  if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) WriteStream(s);
  it = streams_.find(tag);
  if (it == streams_.end()) return;
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ReadStream(s);
  if (!closed_) PumpSend();
}

// ---- the session socket's input ----

ssize_t MuxSession::ReadSessionBytes(void* into, size_t want) {
  if (headAt_ < head_.size()) {
    size_t n = std::min(want, head_.size() - headAt_);
    memcpy(into, head_.data() + headAt_, n);
    headAt_ += n;
    if (headAt_ == head_.size()) {
      head_.clear();
      head_.shrink_to_fit();
      headAt_ = 0;
    }
    return static_cast<ssize_t>(n);
  }
  ssize_t n = read(fd_.Get(), into, want);
  if (n < 0) return -errno;
  return n;
}

void MuxSession::ReadSession() {
  size_t budget = kReadBudget;
  while (!closed_ && budget > 0) {
    if (payloadLeft_ == 0) {
      ssize_t n = ReadSessionBytes(header_ + headerHave_, mux::kHeaderSize - headerHave_);
      if (n == -EAGAIN || n == -EINTR) return;
      if (n == 0) {
        bool clean = headerHave_ == 0 && streams_.empty() && (goAwaySent_ || remoteGoAway_);
        if (clean) Destroy("", "");
        else Destroy("ERR_MUX_SESSION_CLOSED", "the connection ended while the mux session was open");
        return;
      }
      if (n < 0) return FailSession(static_cast<int>(-n), "read");
      reads_++;
      headerHave_ += static_cast<size_t>(n);
      budget -= std::min(budget, static_cast<size_t>(n));
      if (headerHave_ < mux::kHeaderSize) continue;
      headerHave_ = 0;
      if (!OnHeader()) return;
      continue;
    }
    auto it = streams_.find(payloadStream_);
    Stream* s = it == streams_.end() ? nullptr : it->second.get();
    ssize_t n = ReadPayload(s, std::min(payloadLeft_, budget));
    if (n == -EAGAIN || n == -EINTR || n == kStalled) return;
    if (n == 0) return Destroy("ERR_MUX_SESSION_CLOSED", "the connection ended in the middle of a frame");
    if (n < 0) return FailSession(static_cast<int>(-n), "splice");
    reads_++;
    payloadLeft_ -= static_cast<size_t>(n);
    budget -= std::min(budget, static_cast<size_t>(n));
    if (s == nullptr) continue;
    if (payloadLeft_ == 0 && payloadFin_) {
      RemoteFin(s);  // writes what is buffered, as below
    } else {
      WriteStream(s);
    }
  }
}

// Moves up to `want` payload bytes for `s` (nullptr: a stream gone, or past its FIN: dropped).
ssize_t MuxSession::ReadPayload(Stream* s, size_t want) {
  thread_local char scratch[64 * 1024];  // dropped bytes: per thread, as a worker thread may run sessions too
  if (s == nullptr || s->remoteFin) return ReadSessionBytes(scratch, std::min(want, sizeof(scratch)));
  bool fromHead = headAt_ < head_.size();
  Pipe* pipe = s->inPipe;
  if (!fromHead && s->overflowAt == s->overflow.size() && pipe != nullptr) {
    // Grown when a frame needs more room than is left: a fast stream's pipe takes a whole frame
    // per splice; a slow one's fills, and its bytes go to the overflow, bounded by the window.
    if (pipe->capacity - std::min(s->inBytes, pipe->capacity) < want) pipes_->Grow(pipe);
    size_t room = pipe->capacity > s->inBytes ? pipe->capacity - s->inBytes : 0;
    if (room > 0) {
      ssize_t n = splice(fd_.Get(), nullptr, pipe->writeFd, nullptr, std::min(want, room), SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        s->inBytes += static_cast<size_t>(n);
        return n;
      }
      if (n == 0) return 0;
      if (errno != EAGAIN) return -errno;
      // EAGAIN: the socket is empty, or the pipe is full although its count says room (pages
      // part used). Bytes waiting in the socket say which; then they go to the overflow.
      int waiting = 0;
      if (ioctl(fd_.Get(), FIONREAD, &waiting) != 0 || waiting <= 0) return -EAGAIN;
    }
    if (Stall(s)) return kStalled;
  }
  if (s->overflowAt > 0 && s->overflowAt == s->overflow.size()) {
    s->overflow.clear();
    s->overflowAt = 0;
  }
  size_t at = s->overflow.size();
  size_t take = std::min<size_t>(want, 256 * 1024);
  s->overflow.resize(at + take);
  ssize_t n = ReadSessionBytes(&s->overflow[at], take);
  s->overflow.resize(at + static_cast<size_t>(std::max<ssize_t>(n, 0)));
  if (n > 0) overflowBytes_ += static_cast<uint64_t>(n);
  return n;
}

// The stream's pipe is full: wait (reading nothing) for its socket to take bytes, up to the
// frame's deadline. False when the stream is slow, or unattached: its bytes go to its overflow.
bool MuxSession::Stall(Stream* s) {
  if (s->slow || s->fd < 0) return false;
  uint64_t now = uv_hrtime();
  if (frameStallStart_ == 0) frameStallStart_ = now;
  uint64_t waited = now - frameStallStart_;
  if (waited >= kStallNs) {
    s->slow = true;
    return false;
  }
  stalledOn_ = s->id;
  s->wantsOut = true;
  UpdateStreamWatch(s);
  UpdateSessionWatch();
  uv_timer_start(stallTimer_, [](uv_timer_t* timer) {
    if (timer->data == nullptr) return;
    auto* self = static_cast<MuxSession*>(timer->data);
    auto it = self->streams_.find(self->stalledOn_);
    if (it != self->streams_.end()) it->second->slow = true;
    self->Resume();
    self->ReadSession();
    self->PumpSend();
    self->Deliver();
  }, (kStallNs - waited + 999999) / 1000000, 0);
  return true;
}

// Reads the session again after a stall (its stream's socket took bytes, its deadline passed, or it ended).
void MuxSession::Resume() {
  if (stalledOn_ == 0) return;
  stalledOn_ = 0;
  uv_timer_stop(stallTimer_);
  UpdateSessionWatch();
}

bool MuxSession::OnHeader() {
  mux::Header h;
  if (const char* rule = mux::DecodeHeader(header_, options_.maxWindow, &h)) {
    std::string message;
    if (strcmp(rule, "ERR_MUX_BAD_VERSION") == 0) message = "unsupported yamux version " + std::to_string(h.version);
    else if (strcmp(rule, "ERR_MUX_BAD_TYPE") == 0) message = "unknown yamux frame type " + std::to_string(h.type);
    else if (strcmp(rule, "ERR_MUX_FRAME_TOO_LARGE") == 0) message = "data frame of " + std::to_string(h.length) + " bytes exceeds the largest window (" + std::to_string(options_.maxWindow) + ")";
    else message = "frame type " + std::to_string(h.type) + " on stream " + std::to_string(h.streamId);
    ProtocolError(rule, message);
    return false;
  }
  switch (h.type) {
    case mux::kPing:
      OnPing(h);
      return true;
    case mux::kGoAway:
      if (h.length == mux::kNormal) {
        remoteGoAway_ = true;
        Emit({kGoAway, 0, 0, 0, 0, 0, 0, {}, {}});
        return true;
      }
      Destroy("ERR_MUX_PEER_ERROR", h.length == mux::kProtocolError ? "the peer ended the mux session with a protocol error"
                                    : h.length == mux::kInternalError ? "the peer ended the mux session with an internal error"
                                                                      : "the peer ended the mux session with error code " + std::to_string(h.length));
      return false;
    default:
      return OnStreamHeader(h);
  }
}

bool MuxSession::OnStreamHeader(const mux::Header& h) {
  auto it = streams_.find(h.streamId);
  Stream* s = it == streams_.end() ? nullptr : it->second.get();
  bool dataFrame = h.type == mux::kData;
  if (h.flags & mux::kSyn) {
    if (s != nullptr) {
      ProtocolError("ERR_MUX_DUPLICATE_STREAM", "stream " + std::to_string(h.streamId) + " opened twice");
      return false;
    }
    bool ours = (h.streamId % 2 == 1) == options_.client;
    if (ours) {
      ProtocolError("ERR_MUX_BAD_STREAM_ID", "peer opened stream " + std::to_string(h.streamId) + ", an id of our side");
      return false;
    }
    if (goAwaySent_ || streams_.size() >= options_.maxStreams) {
      QueueFrame(mux::kWindowUpdate, mux::kRst, h.streamId, 0);
    } else {
      s = NewStream(h.streamId, false);
      s->acked = true;
      QueueFrame(mux::kWindowUpdate, mux::kAck, h.streamId, 0);
      Emit({kOpened, h.streamId, 0, 0, 0, 0, 0, {}, {}});
    }
  }
  if (dataFrame) {
    if (s != nullptr && h.length > s->recvCredit) {
      ProtocolError("ERR_MUX_WINDOW_EXCEEDED", "stream " + std::to_string(h.streamId) + ": peer sent past its window (" + std::to_string(s->recvCredit) + " bytes left)");
      return false;
    }
    if (s != nullptr) s->recvCredit -= h.length;
    dataFramesIn_++;
    frameStallStart_ = 0;
    payloadStream_ = h.streamId;
    payloadLeft_ = h.length;
    payloadFin_ = (h.flags & mux::kFin) != 0;
  }
  if (s == nullptr) return true;  // reset or finished: its frames in flight are dropped
  if (h.flags & mux::kRst) {
    CloseStream(s, s->local && !s->acked ? StreamEnd::kRefused : StreamEnd::kPeerReset, 0, true);
    return true;
  }
  if (h.flags & mux::kAck) s->acked = true;
  if (!dataFrame) {
    if (h.length > 0) {
      s->sendWindow += h.length;
      s->outFull = false;
      MarkReady(s);
    }
    if (h.flags & mux::kFin) RemoteFin(s);
  } else if (h.length == 0 && payloadFin_) {
    RemoteFin(s);
  }
  return true;
}

void MuxSession::OnPing(const mux::Header& h) {
  if (h.flags & mux::kSyn) {
    if (control_.size() - controlAt_ < kPongQueueLimit) QueueFrame(mux::kPing, mux::kAck, 0, h.length);
    return;
  }
  if (!(h.flags & mux::kAck)) return;
  auto it = pings_.find(h.length);
  if (it == pings_.end()) return;
  rttMs_ = static_cast<double>(uv_hrtime() - it->second) / 1e6;
  pings_.erase(it);
  Emit({kPong, h.length, 0, 0, 0, 0, rttMs_, {}, {}});
}

void MuxSession::ProtocolError(const char* rule, const std::string& message) {
  QueueFrame(mux::kGoAway, 0, 0, mux::kProtocolError);
  // Best effort: what the socket takes now. The peer learns why, or sees the connection close.
  while (controlAt_ < control_.size()) {
    ssize_t n = write(fd_.Get(), control_.data() + controlAt_, control_.size() - controlAt_);
    if (n <= 0) break;
    controlAt_ += static_cast<size_t>(n);
  }
  (void)rule;
  Destroy(std::string("ERR_MUX_PROTOCOL:") + rule, "protocol error from the peer: " + message);
}

void MuxSession::FailSession(int error, const char* syscall) {
  Destroy("ERR_MUX_SESSION_CLOSED", std::string("the connection failed: ") + syscall + ": " + strerror(error));
}

void MuxSession::Destroy(const std::string& code, const std::string& message) {
  if (closed_) return;
  closed_ = true;
  std::vector<Stream*> all;
  for (auto& entry : streams_) all.push_back(entry.second.get());
  // A stream that has passed the peer's FIN on (every byte before it in its socket) is closed, not
  // reset: a reset could make its client's kernel drop what the client has not read yet.
  for (Stream* s : all) CloseStream(s, StreamEnd::kSession, 0, !s->shutDown);
  pings_.clear();
  stalledOn_ = 0;
  if (stallTimer_ != nullptr) uv_timer_stop(stallTimer_);
  if (framePipe_ != nullptr) {
    pipes_->Destroy(framePipe_);
    framePipe_ = nullptr;
  }
  if (sessionWatch_ != 0) epoll_ctl(epollFd_.Get(), EPOLL_CTL_DEL, fd_.Get(), nullptr);
  sessionWatch_ = 0;
  fd_.Reset();
  control_.clear();
  if (poll_ != nullptr) {
    CloseHandle(poll_);
    poll_ = nullptr;
  }
  // Nothing is watched any more: the epoll set and the idle pipes go now, not when JS collects the object.
  epollFd_.Reset();
  pipes_.reset();
  Emit({kClosed, 0, 0, 0, 0, 0, 0, code, message});
  DeliverSoon();
}

// ---- epoll interest ----

void MuxSession::Watch(int fd, uint32_t tag, uint32_t* registered, uint32_t want) {
  if (want == *registered || fd < 0) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = 0;
  ev.data.u32 = tag;
  int op = *registered == 0 ? EPOLL_CTL_ADD : want == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
  if (epoll_ctl(epollFd_.Get(), op, fd, &ev) == 0) *registered = want;
}

// A stream socket is watched for input while its out-pipe has room and for output while bytes
// wait for it; with neither it is not in the set at all, so a hangup cannot spin the loop.
void MuxSession::UpdateStreamWatch(Stream* s) {
  if (s->fd < 0) return;
  uint32_t want = 0;
  if (!s->outEof && !s->outFull && s->outPipe != nullptr && s->outBytes < s->outPipe->capacity && s->outHeadAt >= s->outHead.size()) want |= EPOLLIN | EPOLLRDHUP;
  if (s->wantsOut) want |= EPOLLOUT;
  Watch(s->fd, s->id, &s->watched, want);
}

void MuxSession::UpdateSessionWatch() {
  if (closed_) return;
  uint32_t want = stalledOn_ == 0 ? EPOLLIN | EPOLLRDHUP : 0;
  if (sessionWantsOut_) want |= EPOLLOUT;
  Watch(fd_.Get(), kSessionTag, &sessionWatch_, want);
}

// ---- events out ----

void MuxSession::Emit(Event event) { pending_.push_back(std::move(event)); }

void MuxSession::DeliverSoon() {
  if (deliverTimer_ == nullptr) return;
  uv_timer_start(deliverTimer_, [](uv_timer_t* timer) {
    if (timer->data != nullptr) {
      auto* self = static_cast<MuxSession*>(timer->data);
      if (!self->closed_ && self->headAt_ < self->head_.size()) self->ReadSession();
      self->PumpSend();
      self->Deliver();
    }
  }, 0, 0);
}

void MuxSession::Deliver() {
  if (delivering_) return;
  delivering_ = true;
  while (!pending_.empty()) {
    std::vector<Event> batch;
    batch.swap(pending_);
    for (Event& e : batch) {
      switch (e.kind) {
        case kOpened: events_->StreamOpened(e.id); break;
        case kStreamClosed: events_->StreamClosed(e.id, static_cast<StreamEnd>(e.why), e.error, e.up, e.down); break;
        case kGoAway: events_->GoAwayReceived(e.id); break;
        case kPong: events_->Pong(e.id, e.rtt); break;
        case kClosed: events_->Closed(e.code, e.message); break;
      }
    }
  }
  delivering_ = false;
}

}  // namespace splicer
