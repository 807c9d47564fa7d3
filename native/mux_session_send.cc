// The stream sockets' two directions and the frames written to the session socket.
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "mux_session.h"
#include "mux_stream.h"

namespace splicer {

namespace {

// Streams sharing the session take turns at this grain; a stream alone sends what its pipe holds.
constexpr size_t kSharedFrame = 64 * 1024;
// A WindowUpdate once this fraction of the window has reached the stream socket (src/mux/stream.ts).
constexpr uint64_t kUpdateFraction = 4;

}  // namespace

// Stream socket -> its out-pipe, while the pipe has room.
void MuxSession::ReadStream(Stream* s) {
  if (s->fd < 0 || s->outEof || s->outPipe == nullptr) return;
  Pipe* pipe = s->outPipe;
  for (;;) {
    if (s->outBytes >= pipe->capacity) pipes_->Grow(pipe);
    if (s->outBytes >= pipe->capacity) break;
    ssize_t n = splice(s->fd, nullptr, pipe->writeFd, nullptr, pipe->capacity - s->outBytes, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      s->outBytes += static_cast<size_t>(n);
      MarkReady(s);
      continue;
    }
    if (n == 0) {
      uint32_t id = s->id;
      s->outEof = true;
      QueueFinIfDone(s);
      if (streams_.count(id) == 0) return;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      // Bytes waiting in the socket mean the pipe is what is full: wait for it to drain.
      int waiting = 0;
      if (s->outBytes > 0 && ioctl(s->fd, FIONREAD, &waiting) == 0 && waiting > 0) s->outFull = true;
      break;
    }
    int error = errno;
    QueueFrame(mux::kWindowUpdate, mux::kRst, s->id, 0);
    CloseStream(s, StreamEnd::kLocalError, error, false);
    return;
  }
  UpdateStreamWatch(s);
}

// Its in-pipe, then its overflow -> the stream socket; credit for what it took.
void MuxSession::WriteStream(Stream* s) {
  if (s->fd < 0) return;
  bool wrote = false;
  for (;;) {
    ssize_t n;
    if (s->inBytes > 0) {
      n = splice(s->inPipe->readFd, nullptr, s->fd, nullptr, s->inBytes, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) s->inBytes -= static_cast<size_t>(n);
    } else if (s->overflowAt < s->overflow.size()) {
      n = send(s->fd, s->overflow.data() + s->overflowAt, s->overflow.size() - s->overflowAt, MSG_NOSIGNAL);
      if (n > 0) {
        s->overflowAt += static_cast<size_t>(n);
        if (s->overflowAt == s->overflow.size()) {
          s->overflow.clear();
          s->overflowAt = 0;
        }
      }
    } else {
      break;
    }
    if (n > 0) {
      s->down += static_cast<uint64_t>(n);
      wrote = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    int error = n < 0 ? errno : EPIPE;
    QueueFrame(mux::kWindowUpdate, mux::kRst, s->id, 0);
    CloseStream(s, StreamEnd::kLocalError, error, false);
    return;
  }
  s->wantsOut = s->Buffered() > 0;
  if (!s->wantsOut) s->slow = false;  // caught up: its bytes may stay in the kernel again
  if (wrote && stalledOn_ == s->id) Resume();
  if (!s->wantsOut && s->overflow.capacity() > 64 * 1024) std::string().swap(s->overflow);
  if (wrote) GiveCredit(s);
  if (s->remoteFin && !s->shutDown && s->Buffered() == 0) {
    shutdown(s->fd, SHUT_WR);
    s->shutDown = true;
    uint32_t id = s->id;
    MaybeFinish(s);
    if (streams_.count(id) == 0) return;
  }
  UpdateStreamWatch(s);
}

// The rule of src/mux/stream.ts giveCredit(): an update once a quarter of the window has been
// delivered; the window doubles (up to the maximum) when the reader kept up against the round trip.
void MuxSession::GiveCredit(Stream* s) {
  if (closed_ || s->remoteFin) return;
  uint64_t held = s->Buffered() + s->recvCredit;
  if (held >= s->recvWindow) return;
  uint64_t delta = s->recvWindow - held;
  if (delta < s->recvWindow / kUpdateFraction) return;
  double now = static_cast<double>(uv_hrtime()) / 1e6;
  bool keptUp = s->lastUpdateAt > 0 && rttMs_ >= 0 &&
                (now - s->lastUpdateAt) * static_cast<double>(s->recvWindow) < static_cast<double>(delta) * 8 * rttMs_;
  if (s->recvWindow < options_.maxWindow && keptUp) {
    uint64_t grown = std::min<uint64_t>(s->recvWindow * 2, options_.maxWindow);
    delta += grown - s->recvWindow;
    s->recvWindow = grown;
    largestWindow_ = std::max(largestWindow_, grown);
  }
  s->lastUpdateAt = now;
  s->recvCredit += delta;
  QueueFrame(mux::kWindowUpdate, 0, s->id, static_cast<uint32_t>(delta));
}

void MuxSession::QueueFrame(uint8_t type, uint16_t flags, uint32_t id, uint32_t length) {
  if (closed_ || shutdownSent_) return;  // after our FIN on the connection nothing more is sent
  uint8_t header[mux::kHeaderSize];
  mux::EncodeHeader(header, type, flags, id, length);
  control_.append(reinterpret_cast<const char*>(header), sizeof(header));
}

// FIN once the socket's EOF came and every byte before it left in frames.
void MuxSession::QueueFinIfDone(Stream* s) {
  if (!s->outEof || s->finSent || s->HasOut() || frameStream_ == s->id) return;
  QueueFrame(mux::kWindowUpdate, mux::kFin, s->id, 0);
  s->finSent = true;
  MaybeFinish(s);
}

void MuxSession::MarkReady(Stream* s) {
  if (s->queued || !s->HasOut() || s->sendWindow == 0) return;
  s->queued = true;
  ready_.push_back(s->id);
}

// Writes to the session socket until it is full or nothing is left: the data frame in progress
// first (header, then its bytes from the pipe), then control frames, then the next stream's turn.
void MuxSession::PumpSend() {
  if (closed_) return;
  for (;;) {
    ssize_t n;
    if (frameHeaderSent_ < mux::kHeaderSize) {
      n = send(fd_.Get(), frameHeader_ + frameHeaderSent_, mux::kHeaderSize - frameHeaderSent_, MSG_NOSIGNAL);
      if (n > 0) {
        frameHeaderSent_ += static_cast<size_t>(n);
        continue;
      }
    } else if (frameLeft_ > 0) {
      Stream* s = nullptr;
      Pipe* pipe = framePipe_;
      if (pipe == nullptr) {
        auto it = streams_.find(frameStream_);
        // A frame whose stream ended hands its pipe to framePipe_; none at all cannot be finished.
        if (it == streams_.end()) return Destroy("ERR_MUX_INTERNAL", "a data frame lost its stream");
        s = it->second.get();
        pipe = s->outPipe;
      }
      n = splice(pipe->readFd, nullptr, fd_.Get(), nullptr, frameLeft_, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        frameLeft_ -= static_cast<size_t>(n);
        if (s != nullptr) {
          s->outBytes -= static_cast<size_t>(n);
          s->up += static_cast<uint64_t>(n);
          s->outFull = false;
        }
        if (frameLeft_ == 0) {
          frameStream_ = 0;
          if (framePipe_ != nullptr) {
            pipes_->Destroy(framePipe_);
            framePipe_ = nullptr;
          } else {
            uint32_t id = s->id;
            MarkReady(s);
            QueueFinIfDone(s);
            if (streams_.count(id) != 0) UpdateStreamWatch(s);
          }
        } else if (s != nullptr) {
          UpdateStreamWatch(s);
        }
        continue;
      }
    } else if (controlAt_ < control_.size()) {
      n = send(fd_.Get(), control_.data() + controlAt_, control_.size() - controlAt_, MSG_NOSIGNAL);
      if (n > 0) {
        controlAt_ += static_cast<size_t>(n);
        if (controlAt_ == control_.size()) {
          control_.clear();
          controlAt_ = 0;
        }
        continue;
      }
    } else {
      if (StartFrame()) continue;
      if (goAwaySent_ && streams_.empty() && !shutdownSent_) {
        shutdown(fd_.Get(), SHUT_WR);
        shutdownSent_ = true;
      }
      sessionWantsOut_ = false;
      break;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      sessionWantsOut_ = true;
      break;
    }
    return FailSession(n < 0 ? errno : EPIPE, "write");
  }
  UpdateSessionWatch();
}

// The next stream's turn: its head (what Node had read) as a whole frame among the control
// frames, or a frame of its pipe's bytes. False when no stream has both bytes and credit.
bool MuxSession::StartFrame() {
  while (!ready_.empty()) {
    uint32_t id = ready_.front();
    ready_.pop_front();
    auto it = streams_.find(id);
    if (it == streams_.end()) continue;
    Stream* s = it->second.get();
    s->queued = false;
    if (!s->HasOut() || s->sendWindow == 0 || s->fd < 0) continue;
    size_t most = ready_.empty() ? SIZE_MAX : kSharedFrame;
    if (s->outHeadAt < s->outHead.size()) {
      size_t n = std::min<uint64_t>({s->outHead.size() - s->outHeadAt, s->sendWindow, most, kSharedFrame});
      QueueFrame(mux::kData, 0, id, static_cast<uint32_t>(n));
      dataFramesOut_++;
      control_.append(s->outHead, s->outHeadAt, n);
      s->outHeadAt += n;
      s->up += n;
      s->sendWindow -= n;
      if (s->outHeadAt == s->outHead.size()) {
        std::string().swap(s->outHead);
        s->outHeadAt = 0;
        UpdateStreamWatch(s);
        QueueFinIfDone(s);
        if (streams_.count(id) == 0) return true;
      }
      MarkReady(s);
      return true;
    }
    size_t n = std::min<uint64_t>({s->outBytes, s->sendWindow, most});
    mux::EncodeHeader(frameHeader_, mux::kData, 0, id, static_cast<uint32_t>(n));
    frameHeaderSent_ = 0;
    frameLeft_ = n;
    frameStream_ = id;
    s->sendWindow -= n;
    dataFramesOut_++;
    return true;
  }
  return false;
}

}  // namespace splicer
