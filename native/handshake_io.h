// The handshake's I/O without Node streams: listening sockets, the connections they accept
// and the upstream connects, all in one epoll set of ours that libuv watches as a single fd on
// the JS thread. Everything here runs on the JS thread, so every fd has one owner and no lock:
// JS decides (write, end, connect, release, destroy) and this does the syscalls and reports
// what happened through HandshakeEvents.
//
// Ownership: every fd in `connections_` and `listeners_` is this object's until Release()
// hands it out (to the splice engine, or to a net.Socket) or Destroy()/CloseListener() closes
// it. Connections are known by a 64-bit id never reused, so a recycled fd number cannot reach
// an old connection.
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <string>
#include <unordered_map>

#include "unique_fd.h"

namespace splicer {

// Called on the JS thread from inside HandshakeIo's libuv callback. A handler may call back into
// HandshakeIo (write, destroy, release...), on this connection or any other.
class HandshakeEvents {
 public:
  virtual ~HandshakeEvents() = default;
  virtual void Accepted(uint32_t listener, uint64_t id, const sockaddr_storage& peer) = 0;
  // accept() failed with something other than EAGAIN (EMFILE, ENFILE, ENOBUFS): the listener
  // rests for a moment rather than spin on a connection it cannot take.
  virtual void ListenFailed(uint32_t listener, int error) = 0;
  virtual void Data(uint64_t id, const char* data, size_t length) = 0;
  // The peer's FIN: the connection stays open (half-closed) until JS ends or releases it.
  virtual void Eof(uint64_t id) = 0;
  // A read or queued write failed: the connection is closed already.
  virtual void Failed(uint64_t id, int error) = 0;
  // A connect finished: error 0 with the local address, or errno (the connection is closed).
  virtual void Connected(uint64_t id, int error, const sockaddr_storage* local) = 0;
  // An ended connection saw the peer close (or fail): it is closed now.
  virtual void Drained(uint64_t id) = 0;
};

class HandshakeIo {
 public:
  // Throws SyscallError when epoll_create1 fails.
  HandshakeIo(uv_loop_t* loop, HandshakeEvents* events);
  ~HandshakeIo();
  HandshakeIo(const HandshakeIo&) = delete;
  HandshakeIo& operator=(const HandshakeIo&) = delete;

  // Takes a listening fd over. Throws SyscallError (epoll_ctl); the fd is then still the caller's. `hold`: its connections are not
  // read (their bytes wait in the kernel) until they are released: a forwarder's.
  uint32_t Listen(int fd, bool hold = false);
  void CloseListener(uint32_t id);
  bool LocalAddress(uint32_t listener, sockaddr_storage* out) const;

  // A non-blocking connect; the result comes as Connected. Returns 0 and sets *error when the
  // socket cannot even be made (EMFILE, EAFNOSUPPORT...).
  uint64_t Connect(const sockaddr_storage& to, socklen_t length, int* error);

  // Writes now what the socket takes and queues the rest. Returns 0 (all written), 1 (some
  // queued: written as the socket drains, or handed out by TakeUnsent) or -errno (the write
  // failed; the connection is left for JS to destroy). Unknown ids: -EBADF.
  int Write(uint64_t id, const char* data, size_t length);
  // Writes `data`, then FIN, then reads and drops whatever comes until the peer closes
  // (closing with unread input would send a RST that can destroy the reply before the
  // client reads it); then closes and reports Drained.
  void End(uint64_t id, const char* data, size_t length);
  // Closes at once; `reset`: with SO_LINGER 0, so the peer sees a reset. Unknown ids are ignored.
  void Destroy(uint64_t id, bool reset = false);
  // The queued bytes not yet written (to be sent first by the new owner), emptied.
  std::string TakeUnsent(uint64_t id);
  // Holds a connection unread (its bytes wait in the kernel), or reads it again: a connect's
  // upstream starts held, and is read from the first Resume. Only a reading or held connection
  // changes; unknown ids are ignored.
  void SetHeld(uint64_t id, bool held);
  // Stops watching and hands the fd to the caller; -1 for an unknown id.
  int Release(uint64_t id);
  // Closes every listener and connection.
  void CloseAll();
  // CloseAll, then lets go of libuv's handles and closes the epoll set. Safe from inside one of
  // this object's own events (JS may close the acceptor there): the object lives on, inert.
  void Shutdown();

  size_t ConnectionCount() const { return connections_.size(); }
  size_t ListenerCount() const { return listeners_.size(); }

 private:
  enum class State { kReading, kConnecting, kHeld, kEnding };
  struct Connection {
    int fd = -1;
    State state = State::kReading;
    bool eof = false;
    int connectError = 0;  // connect() refused at once
    uint32_t watched = 0;     // the epoll events asked for (0: none, or a one-shot that fired)
    bool registered = false;  // in the epoll set, armed or not
    std::string outbox;
  };
  struct Listener {
    UniqueFd fd;
    bool resting = false;
    bool hold = false;
  };

  static constexpr uint64_t kListenerBit = 1ull << 63;

  static void OnReady(uv_poll_t* handle, int status, int events);
  static void OnRested(uv_timer_t* timer);
  void Dispatch();
  void AcceptFrom(uint32_t id);
  void HandleConnection(uint64_t id, uint32_t events);
  void ReadSome(uint64_t id, Connection& connection);
  void FinishConnect(uint64_t id, Connection& connection);
  bool Flush(uint64_t id, Connection& connection);
  void Watch(Connection& connection, uint64_t id);
  void Close(uint64_t id);
  void UpdateRef();

  uv_loop_t* loop_;
  HandshakeEvents* events_;
  UniqueFd epollFd_;
  uv_poll_t* poll_ = nullptr;   // freed by its close callback
  uv_timer_t* rest_ = nullptr;  // wakes resting listeners
  bool dispatching_ = false;
  std::unordered_map<uint64_t, Connection> connections_;
  std::unordered_map<uint32_t, Listener> listeners_;
  uint64_t nextId_ = 1;
  uint32_t nextListener_ = 1;
  char readBuffer_[16384];
};

}  // namespace splicer
