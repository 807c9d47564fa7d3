// A yamux session whose stream bytes move by splice(): the session socket and every stream
// socket are the session's fds, watched through one epoll set that libuv polls on the JS thread.
//
// Send (stream socket -> session): splice the stream socket into its out-pipe; when the session
// socket is writable and the stream has credit, write the 12-byte header, then splice exactly that
// many bytes from the pipe into the session socket. Until a frame's last byte is out the session
// is "mid-frame": nothing else is written in between. Control frames wait in a small buffer that
// is written between data frames; streams with data take turns, one frame each.
//
// Receive (session -> stream socket): read exactly a header, then splice exactly its Length bytes
// into the stream's in-pipe, or, when that pipe is full (a slow reader), read them into the
// stream's overflow buffer, so that the session never stops reading for one stream. Bytes go to
// the pipe only while the overflow is empty, which keeps their order. Credit (WindowUpdate) is
// given back only for bytes written to the stream socket: the window bounds what a stream holds.
//
// Events reach the owner after the work that raised them, never from inside a method it called,
// so that the owner may call any method from an event.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "mux_frame.h"
#include "pipe_pool.h"
#include "unique_fd.h"

namespace splicer {

// Why a stream ended.
enum class StreamEnd : int { kFinished = 0, kPeerReset = 1, kRefused = 2, kLocalError = 3, kSession = 4, kAborted = 5 };

class MuxSessionEvents {
 public:
  virtual ~MuxSessionEvents() = default;
  // The peer opened stream `id` (already acknowledged): Attach() or Refuse() it.
  virtual void StreamOpened(uint32_t id) = 0;
  // The stream is gone, its socket closed. `error`: the errno of a kLocalError.
  virtual void StreamClosed(uint32_t id, StreamEnd why, int error, uint64_t bytesUp, uint64_t bytesDown) = 0;
  virtual void GoAwayReceived(uint32_t code) = 0;
  virtual void Pong(uint32_t pingId, double rttMs) = 0;
  // The session is over (every StreamClosed came first). `code` empty: a clean end.
  virtual void Closed(const std::string& code, const std::string& message) = 0;
};

struct MuxOptions {
  bool client = true;
  uint32_t maxStreams = 1024;
  uint32_t maxWindow = 4 * 1024 * 1024;
  size_t maxPipeSize = 1 << 20;
};

class MuxSession {
 public:
  // Takes `fd` (the connected session socket) over; `head` is what was read from it already.
  // Throws SyscallError (epoll_create1, epoll_ctl, uv_poll_init).
  MuxSession(uv_loop_t* loop, int fd, std::string head, const MuxOptions& options, MuxSessionEvents* events);
  ~MuxSession();
  MuxSession(const MuxSession&) = delete;
  MuxSession& operator=(const MuxSession&) = delete;

  // Opens a stream on `fd` (taken over even on failure); `head` goes first. Returns its id, or 0
  // with `*why` set (closed, going away, the peer's GoAway, max streams, ids exhausted, no pipe).
  uint32_t Open(int fd, std::string head, const char** why);
  // Gives a peer-opened stream its socket (taken over). False when the stream is gone (the fd is closed then).
  bool Attach(uint32_t id, int fd, std::string head);
  // A peer-opened stream nobody takes: RST.
  void Refuse(uint32_t id);
  // Resets one stream (RST to the peer, SO_LINGER 0 on its socket).
  void Abort(uint32_t id);
  // Sends a ping; its answer comes as Pong. 0 when closed.
  uint32_t Ping();
  // GoAway: no new streams either way; once the last stream ends, the session socket is shut down.
  void GoAway();
  // Ends at once: every stream socket reset, the session socket closed.
  void Destroy(const std::string& code, const std::string& message);

  bool IsClosed() const { return closed_; }
  size_t StreamCount() const { return streams_.size(); }
  // Reads from the session socket so far: any of them proves the peer alive while a ping waits.
  uint64_t Reads() const { return reads_; }
  // Data frames each way, and the largest receive window a stream was granted: what the tests
  // and benchmarks read to see the frames' size and the windows' growth.
  uint64_t DataFramesIn() const { return dataFramesIn_; }
  uint64_t DataFramesOut() const { return dataFramesOut_; }
  uint64_t LargestWindow() const { return largestWindow_; }
  // Payload bytes that went through user space (a stream's overflow) instead of its pipe.
  uint64_t OverflowBytes() const { return overflowBytes_; }

 private:
  struct Stream;
  enum EventKind { kOpened = 1, kStreamClosed, kGoAway, kPong, kClosed };
  struct Event {
    int kind;
    uint32_t id;
    int why;
    int error;
    uint64_t up;
    uint64_t down;
    double rtt;
    std::string code;
    std::string message;
  };

  // mux_session.cc: control, receive, events.
  void OnReady();
  void Dispatch(uint32_t tag, uint32_t events);
  void ReadSession();
  bool OnHeader();
  bool OnStreamHeader(const mux::Header& h);
  void OnPing(const mux::Header& h);
  ssize_t ReadPayload(Stream* s, size_t want);
  ssize_t ReadSessionBytes(void* into, size_t want);
  bool Stall(Stream* s);
  void Resume();
  void ProtocolError(const char* rule, const std::string& message);
  // mux_session_streams.cc: opening, attaching, ending streams.
  Stream* NewStream(uint32_t id, bool local);
  void RemoteFin(Stream* s);
  void CloseStream(Stream* s, StreamEnd why, int error, bool reset);
  void MaybeFinish(Stream* s);
  void Watch(int fd, uint32_t tag, uint32_t* registered, uint32_t want);
  void UpdateStreamWatch(Stream* s);
  void UpdateSessionWatch();
  void Emit(Event event);
  void DeliverSoon();
  void Deliver();

  // mux_session_send.cc: both stream directions, frames out.
  void ReadStream(Stream* s);
  void WriteStream(Stream* s);
  void GiveCredit(Stream* s);
  void QueueFrame(uint8_t type, uint16_t flags, uint32_t id, uint32_t length);
  void QueueFinIfDone(Stream* s);
  void MarkReady(Stream* s);
  void PumpSend();
  bool StartFrame();
  void FailSession(int error, const char* syscall);

  uv_loop_t* loop_;
  MuxOptions options_;
  MuxSessionEvents* events_;
  UniqueFd fd_;
  UniqueFd epollFd_;
  uv_poll_t* poll_ = nullptr;
  uv_timer_t* deliverTimer_ = nullptr;
  uv_timer_t* stallTimer_ = nullptr;
  std::unique_ptr<PipePool> pipes_;  // freed (its idle pipes closed) when the session closes
  std::unordered_map<uint32_t, std::unique_ptr<Stream>> streams_;
  uint32_t nextId_;
  bool closed_ = false;
  bool goAwaySent_ = false;
  bool remoteGoAway_ = false;
  bool shutdownSent_ = false;
  uint32_t sessionWatch_ = 0;
  bool sessionWantsOut_ = false;
  uint64_t reads_ = 0;
  uint64_t dataFramesIn_ = 0;
  uint64_t overflowBytes_ = 0;
  uint64_t dataFramesOut_ = 0;
  uint64_t largestWindow_ = mux::kInitialWindow;

  // Receive state: the header being read, then the payload of the current Data frame.
  std::string head_;
  size_t headAt_ = 0;
  uint8_t header_[mux::kHeaderSize];
  size_t headerHave_ = 0;
  uint32_t payloadStream_ = 0;
  size_t payloadLeft_ = 0;
  bool payloadFin_ = false;
  uint64_t frameStallStart_ = 0;  // uv_hrtime when the current frame first waited for its stream socket
  uint32_t stalledOn_ = 0;        // the stream whose socket the session waits for (reading nothing)

  // Send state: control frames; the data frame in progress (its header, then its payload).
  std::string control_;
  size_t controlAt_ = 0;
  std::deque<uint32_t> ready_;
  uint8_t frameHeader_[mux::kHeaderSize];
  size_t frameHeaderSent_ = mux::kHeaderSize;
  size_t frameLeft_ = 0;
  uint32_t frameStream_ = 0;
  Pipe* framePipe_ = nullptr;  // owned here when its stream ended mid-frame

  uint32_t nextPingId_ = 1;
  std::unordered_map<uint32_t, uint64_t> pings_;  // id -> uv_hrtime at send
  double rttMs_ = -1;

  std::vector<Event> pending_;
  bool delivering_ = false;
};

}  // namespace splicer
