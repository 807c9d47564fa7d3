#include "handshake_io.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "syscall_error.h"
#include "uv_watch.h"

namespace splicer {

namespace {

constexpr int kBatch = 64;
// Events handled per libuv callback before the rest of Node's loop gets a turn; level-triggered,
// so what is left is reported again at once.
constexpr int kBudget = 512;
constexpr uint64_t kRestMs = 100;

void NoDelay(int fd) {
  int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

}  // namespace

HandshakeIo::HandshakeIo(uv_loop_t* loop, HandshakeEvents* events) : loop_(loop), events_(events) {
  epollFd_ = UniqueFd(epoll_create1(EPOLL_CLOEXEC));
  if (!epollFd_.Valid()) throw SyscallError(errno, "epoll_create1");
  poll_ = WatchReadable(loop_, epollFd_.Get(), this, OnReady);
  rest_ = new uv_timer_t;
  uv_timer_init(loop_, rest_);
  rest_->data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(rest_));
  UpdateRef();
}

HandshakeIo::~HandshakeIo() { Shutdown(); }

void HandshakeIo::Shutdown() {
  CloseAll();
  if (poll_) CloseHandle(std::exchange(poll_, nullptr));
  if (rest_) CloseHandle(std::exchange(rest_, nullptr));
  // A Dispatch under way (this was called from one of its events) finds the set gone and stops.
  epollFd_.Reset();
}

uint32_t HandshakeIo::Listen(int fd, bool hold) {
  uint32_t id = nextListener_++;
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = kListenerBit | id;
  if (epoll_ctl(epollFd_.Get(), EPOLL_CTL_ADD, fd, &event) != 0) throw SyscallError(errno, "epoll_ctl");
  listeners_[id].fd = UniqueFd(fd);
  listeners_[id].hold = hold;
  UpdateRef();
  return id;
}

void HandshakeIo::CloseListener(uint32_t id) {
  listeners_.erase(id);  // closing the fd takes it out of the epoll set
  UpdateRef();
}

bool HandshakeIo::LocalAddress(uint32_t listener, sockaddr_storage* out) const {
  auto it = listeners_.find(listener);
  if (it == listeners_.end()) return false;
  socklen_t length = sizeof(*out);
  return getsockname(it->second.fd.Get(), reinterpret_cast<sockaddr*>(out), &length) == 0;
}

uint64_t HandshakeIo::Connect(const sockaddr_storage& to, socklen_t length, int* error) {
  int fd = socket(to.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = errno;
    return 0;
  }
  NoDelay(fd);
  int failure = 0;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&to), length) != 0 && errno != EINPROGRESS) failure = errno;
  uint64_t id = nextId_++;
  Connection& connection = connections_[id];
  connection.fd = fd;
  connection.state = State::kConnecting;
  // A connect() refused at once is reported as Connected too, from the loop, once JS holds the
  // id: the socket is writable at once, and FinishConnect finds the error here.
  connection.connectError = failure;
  Watch(connection, id);
  UpdateRef();
  return id;
}

int HandshakeIo::Write(uint64_t id, const char* data, size_t length) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return -EBADF;
  Connection& connection = it->second;
  if (connection.outbox.empty()) {
    while (length > 0) {
      ssize_t written = send(connection.fd, data, length, MSG_NOSIGNAL);
      if (written < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        return -errno;
      }
      data += written;
      length -= static_cast<size_t>(written);
    }
    if (length == 0) return 0;
  }
  connection.outbox.append(data, length);
  Watch(connection, id);
  return 1;
}

void HandshakeIo::End(uint64_t id, const char* data, size_t length) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  Connection& connection = it->second;
  if (length > 0 && Write(id, data, length) < 0) {
    Close(id);
    events_->Drained(id);
    return;
  }
  connection.state = State::kEnding;
  if (connection.outbox.empty()) shutdown(connection.fd, SHUT_WR);
  if (connection.eof) {
    // The peer is gone already: nothing to wait for once the reply is out.
    if (connection.outbox.empty()) {
      Close(id);
      events_->Drained(id);
    }
    return;
  }
  Watch(connection, id);
}

void HandshakeIo::Destroy(uint64_t id, bool reset) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  if (reset) {
    struct linger lg = {1, 0};
    setsockopt(it->second.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  }
  Close(id);
}

std::string HandshakeIo::TakeUnsent(uint64_t id) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return {};
  std::string unsent;
  unsent.swap(it->second.outbox);
  return unsent;
}

void HandshakeIo::SetHeld(uint64_t id, bool held) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  Connection& connection = it->second;
  if (connection.state != State::kReading && connection.state != State::kHeld) return;
  connection.state = held ? State::kHeld : State::kReading;
  Watch(connection, id);
}

int HandshakeIo::Release(uint64_t id) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return -1;
  int fd = it->second.fd;
  // A disarmed registration (a connect's, one-shot) can stay: it reports nothing, and leaves
  // the set when its new owner closes the fd.
  if (it->second.watched != 0) epoll_ctl(epollFd_.Get(), EPOLL_CTL_DEL, fd, nullptr);
  connections_.erase(it);
  UpdateRef();
  return fd;
}

void HandshakeIo::CloseAll() {
  for (auto& entry : connections_) close(entry.second.fd);
  connections_.clear();
  listeners_.clear();
  UpdateRef();
}

void HandshakeIo::OnReady(uv_poll_t* handle, int status, int events) {
  auto* self = static_cast<HandshakeIo*>(handle->data);
  if (self != nullptr) self->Dispatch();
}

void HandshakeIo::OnRested(uv_timer_t* timer) {
  auto* self = static_cast<HandshakeIo*>(timer->data);
  if (self == nullptr) return;
  for (auto& entry : self->listeners_) {
    Listener& listener = entry.second;
    if (!listener.resting) continue;
    listener.resting = false;
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = kListenerBit | entry.first;
    epoll_ctl(self->epollFd_.Get(), EPOLL_CTL_MOD, listener.fd.Get(), &event);
  }
}

void HandshakeIo::Dispatch() {
  if (dispatching_) return;
  dispatching_ = true;
  epoll_event ready[kBatch];
  int handled = 0;
  while (handled < kBudget && epollFd_.Valid()) {
    int count = epoll_wait(epollFd_.Get(), ready, kBatch, 0);
    if (count <= 0) break;
    for (int i = 0; i < count && epollFd_.Valid(); i++) {
      uint64_t key = ready[i].data.u64;
      if (key & kListenerBit) {
        AcceptFrom(static_cast<uint32_t>(key & ~kListenerBit));
      } else {
        HandleConnection(key, ready[i].events);
      }
    }
    handled += count;
    if (count < kBatch) break;
  }
  dispatching_ = false;
}

void HandshakeIo::AcceptFrom(uint32_t id) {
  for (int accepted = 0; accepted < kBatch; accepted++) {
    auto it = listeners_.find(id);
    if (it == listeners_.end()) return;  // closed by a handler
    sockaddr_storage peer{};
    socklen_t length = sizeof(peer);
    int fd = accept4(it->second.fd.Get(), reinterpret_cast<sockaddr*>(&peer), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
      int error = errno;
      // Out of fds: stop watching for a moment (level-triggered, the waiting connection would
      // wake the loop again at once), then try again.
      it->second.resting = true;
      epoll_event event{};
      event.data.u64 = kListenerBit | id;
      epoll_ctl(epollFd_.Get(), EPOLL_CTL_MOD, it->second.fd.Get(), &event);
      if (rest_ != nullptr && !uv_is_active(reinterpret_cast<uv_handle_t*>(rest_))) uv_timer_start(rest_, OnRested, kRestMs, 0);
      events_->ListenFailed(id, error);
      return;
    }
    NoDelay(fd);
    uint64_t connectionId = nextId_++;
    Connection& connection = connections_[connectionId];
    connection.fd = fd;
    if (it->second.hold) connection.state = State::kHeld;
    Watch(connection, connectionId);
    UpdateRef();
    events_->Accepted(id, connectionId, peer);
  }
}

void HandshakeIo::HandleConnection(uint64_t id, uint32_t events) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;  // closed or released since the batch was read
  Connection& connection = it->second;
  if (connection.state == State::kConnecting) {
    FinishConnect(id, connection);
    return;
  }
  if ((events & (EPOLLOUT | EPOLLERR)) && !connection.outbox.empty()) {
    if (!Flush(id, connection)) return;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    auto again = connections_.find(id);
    if (again != connections_.end()) ReadSome(id, again->second);
  }
}

void HandshakeIo::ReadSome(uint64_t id, Connection& connection) {
  if (connection.eof) return;
  ssize_t got = read(connection.fd, readBuffer_, sizeof(readBuffer_));
  if (got < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    int error = errno;
    bool ending = connection.state == State::kEnding;
    Close(id);
    if (ending) events_->Drained(id);
    else events_->Failed(id, error);
    return;
  }
  if (connection.state == State::kEnding) {
    if (got == 0) {
      Close(id);
      events_->Drained(id);
    }
    return;  // what an ended connection still sends is dropped
  }
  if (got == 0) {
    connection.eof = true;
    Watch(connection, id);
    events_->Eof(id);
    return;
  }
  events_->Data(id, readBuffer_, static_cast<size_t>(got));
}

void HandshakeIo::FinishConnect(uint64_t id, Connection& connection) {
  int error = connection.connectError;
  if (error == 0) {
    socklen_t length = sizeof(error);
    if (getsockopt(connection.fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
  }
  if (error != 0) {
    Close(id);
    events_->Connected(id, error, nullptr);
    return;
  }
  sockaddr_storage local{};
  socklen_t length = sizeof(local);
  getsockname(connection.fd, reinterpret_cast<sockaddr*>(&local), &length);
  // Held: not read until JS decides (the upstream's first bytes belong to the splice). The
  // one-shot registration has disarmed itself: it stays in the set, reporting nothing.
  connection.state = State::kHeld;
  connection.watched = 0;
  events_->Connected(id, 0, &local);
}

bool HandshakeIo::Flush(uint64_t id, Connection& connection) {
  while (!connection.outbox.empty()) {
    ssize_t written = send(connection.fd, connection.outbox.data(), connection.outbox.size(), MSG_NOSIGNAL);
    if (written < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return true;
      int error = errno;
      bool ending = connection.state == State::kEnding;
      Close(id);
      if (ending) events_->Drained(id);
      else events_->Failed(id, error);
      return false;
    }
    connection.outbox.erase(0, static_cast<size_t>(written));
  }
  if (connection.state == State::kEnding) {
    shutdown(connection.fd, SHUT_WR);
    if (connection.eof) {
      Close(id);
      events_->Drained(id);
      return false;
    }
  }
  Watch(connection, id);
  return true;
}

// Asks epoll for what the connection's state needs: its input while reading or ending (until
// EOF), room to write while bytes are queued, the connect's outcome while connecting.
void HandshakeIo::Watch(Connection& connection, uint64_t id) {
  uint32_t wanted = 0;
  switch (connection.state) {
    // One-shot: once the outcome is in, the registration disarms itself, and a held connection
    // costs no epoll_ctl until it is released.
    case State::kConnecting: wanted = EPOLLOUT | EPOLLONESHOT; break;
    case State::kHeld: wanted = 0; break;
    case State::kReading:
    case State::kEnding: wanted = connection.eof ? 0u : static_cast<uint32_t>(EPOLLIN); break;
  }
  if (!connection.outbox.empty() && connection.state != State::kConnecting) wanted |= EPOLLOUT;
  if (wanted == connection.watched) return;
  epoll_event event{};
  event.events = wanted;
  event.data.u64 = id;
  int op = !connection.registered ? EPOLL_CTL_ADD : wanted == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
  epoll_ctl(epollFd_.Get(), op, connection.fd, &event);
  connection.registered = wanted != 0;
  connection.watched = wanted;
}

void HandshakeIo::Close(uint64_t id) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  close(it->second.fd);  // leaves the epoll set with it
  connections_.erase(it);
  UpdateRef();
}

// The epoll set keeps the process alive while it holds a listener or a connection, as Node's
// own sockets would.
void HandshakeIo::UpdateRef() {
  if (poll_ == nullptr) return;
  auto* handle = reinterpret_cast<uv_handle_t*>(poll_);
  bool busy = !connections_.empty() || !listeners_.empty();
  if (busy && !uv_has_ref(handle)) uv_ref(handle);
  if (!busy && uv_has_ref(handle)) uv_unref(handle);
}

}  // namespace splicer
