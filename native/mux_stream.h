// One stream of a spliced MuxSession: its socket, its two pipes and its two windows.
#pragma once

#include <cstdint>
#include <string>

#include "mux_frame.h"
#include "mux_session.h"
#include "pipe_pool.h"

namespace splicer {

struct MuxSession::Stream {
  uint32_t id = 0;
  int fd = -1;  // the stream socket, ours; -1 until attached
  bool local = false;
  bool acked = false;
  uint32_t watched = 0;  // the epoll events registered for fd

  // Out: stream socket -> session. `outHead` (what Node had read) goes before the pipe's bytes.
  Pipe* outPipe = nullptr;
  size_t outBytes = 0;
  bool outFull = false;  // the pipe took no more although its count says room: wait for it to drain
  std::string outHead;
  size_t outHeadAt = 0;
  bool outEof = false;
  bool finSent = false;
  bool queued = false;  // in ready_
  uint64_t sendWindow = mux::kInitialWindow;

  // In: session -> stream socket: the pipe first, then the overflow (newer bytes).
  Pipe* inPipe = nullptr;
  size_t inBytes = 0;
  std::string overflow;
  size_t overflowAt = 0;
  bool wantsOut = false;
  bool slow = false;  // its socket kept the session waiting past the deadline: payload to the overflow until it catches up
  bool remoteFin = false;
  bool shutDown = false;  // SHUT_WR sent after the peer's FIN and every byte before it
  uint64_t recvWindow = mux::kInitialWindow;
  uint64_t recvCredit = mux::kInitialWindow;
  double lastUpdateAt = 0;

  uint64_t up = 0;    // stream socket -> session
  uint64_t down = 0;  // session -> stream socket

  size_t Buffered() const { return inBytes + (overflow.size() - overflowAt); }
  bool HasOut() const { return outBytes > 0 || outHeadAt < outHead.size(); }
};

}  // namespace splicer
