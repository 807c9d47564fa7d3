// A spliced session's streams: opened by us or by the peer, given their sockets, ended.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mux_session.h"
#include "mux_stream.h"

namespace splicer {

MuxSession::Stream* MuxSession::NewStream(uint32_t id, bool local) {
  auto stream = std::make_unique<Stream>();
  stream->id = id;
  stream->local = local;
  stream->recvWindow = mux::kInitialWindow;
  stream->inPipe = pipes_->Acquire();  // none (EMFILE...): every byte goes to the overflow
  Stream* s = stream.get();
  streams_[id] = std::move(stream);
  return s;
}

uint32_t MuxSession::Open(int fd, std::string head, const char** why) {
  UniqueFd owned(fd);
  if (closed_) *why = "ERR_MUX_SESSION_CLOSED";
  else if (goAwaySent_) *why = "ERR_MUX_GOING_AWAY";
  else if (remoteGoAway_) *why = "ERR_MUX_GOING_AWAY_PEER";
  else if (streams_.size() >= options_.maxStreams) *why = "ERR_MUX_TOO_MANY_STREAMS";
  else if (nextId_ > mux::kMaxStreamId - 1 || nextId_ == 0) *why = "ERR_MUX_STREAMS_EXHAUSTED";
  else *why = nullptr;
  if (*why != nullptr) return 0;
  Pipe* outPipe = pipes_->Acquire();
  if (outPipe == nullptr) {
    *why = "ERR_MUX_NO_PIPE";
    return 0;
  }
  uint32_t id = nextId_;
  nextId_ += 2;
  Stream* s = NewStream(id, true);
  s->fd = owned.Release();
  s->outPipe = outPipe;
  s->outHead = std::move(head);
  QueueFrame(mux::kWindowUpdate, mux::kSyn, id, 0);
  MarkReady(s);
  UpdateStreamWatch(s);
  PumpSend();
  DeliverSoon();
  return id;
}

bool MuxSession::Attach(uint32_t id, int fd, std::string head) {
  UniqueFd owned(fd);
  auto it = streams_.find(id);
  if (closed_ || it == streams_.end() || it->second->fd >= 0) return false;
  Stream* s = it->second.get();
  s->outPipe = pipes_->Acquire();
  if (s->outPipe == nullptr) {
    Abort(id);
    return false;
  }
  s->fd = owned.Release();
  s->outHead = std::move(head);
  MarkReady(s);
  WriteStream(s);  // what arrived while the socket was being connected
  if (streams_.count(id) != 0) UpdateStreamWatch(s);
  PumpSend();
  DeliverSoon();
  return true;
}

void MuxSession::Refuse(uint32_t id) { Abort(id); }

void MuxSession::Abort(uint32_t id) {
  auto it = streams_.find(id);
  if (closed_ || it == streams_.end()) return;
  QueueFrame(mux::kWindowUpdate, mux::kRst, id, 0);
  CloseStream(it->second.get(), StreamEnd::kAborted, 0, true);
  PumpSend();
  DeliverSoon();
}

uint32_t MuxSession::Ping() {
  if (closed_) return 0;
  uint32_t id = nextPingId_;
  nextPingId_ = nextPingId_ + 1 == 0 ? 1 : nextPingId_ + 1;
  pings_[id] = uv_hrtime();
  QueueFrame(mux::kPing, mux::kSyn, 0, id);
  PumpSend();
  DeliverSoon();
  return id;
}

void MuxSession::GoAway() {
  if (closed_ || goAwaySent_) return;
  goAwaySent_ = true;
  QueueFrame(mux::kGoAway, 0, 0, mux::kNormal);
  PumpSend();
  DeliverSoon();
}

void MuxSession::RemoteFin(Stream* s) {
  if (s->remoteFin) return;
  s->remoteFin = true;
  WriteStream(s);
}

// The stream's life is over when FIN went both ways and every byte reached its socket.
void MuxSession::MaybeFinish(Stream* s) {
  if (s->finSent && s->shutDown && frameStream_ != s->id) CloseStream(s, StreamEnd::kFinished, 0, false);
}

void MuxSession::CloseStream(Stream* s, StreamEnd why, int error, bool reset) {
  uint32_t id = s->id;
  if (s->fd >= 0) {
    if (reset) {
      linger hard{1, 0};
      setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
    }
    if (s->watched != 0) epoll_ctl(epollFd_.Get(), EPOLL_CTL_DEL, s->fd, nullptr);
    close(s->fd);
    s->fd = -1;
  }
  if (s->outPipe != nullptr) {
    if (frameStream_ == id && frameLeft_ > 0) {
      framePipe_ = s->outPipe;  // the frame on the wire still needs its bytes
    } else if (s->outBytes == 0) {
      pipes_->Release(s->outPipe);
    } else {
      pipes_->Destroy(s->outPipe);
    }
  }
  if (s->inPipe != nullptr) {
    if (s->inBytes == 0) pipes_->Release(s->inPipe);
    else pipes_->Destroy(s->inPipe);
  }
  if (frameStream_ == id) frameStream_ = 0;
  if (stalledOn_ == id) Resume();
  Emit({kStreamClosed, id, static_cast<int>(why), error, s->up, s->down, 0, {}, {}});
  streams_.erase(id);
}

}  // namespace splicer
