// The JS face of HandshakeIo: the Acceptor class. Its events reach JS as one callback,
// onEvent(kind, id, a, b, c), called on the JS thread from libuv:
//   1 accepted   (id, listener, peer host, peer port)
//   2 data       (id, Buffer)
//   3 eof        (id)
//   4 failed     (id, errno)                 the connection is closed
//   5 connected  (id, errno, local host, local port)   errno 0, or the connection is closed
//   6 drained    (id)                        an ended connection is closed
//   7 listen-failed (listener, errno)        accept() failed; the listener rests 100 ms
#include <arpa/inet.h>
#include <napi.h>
#include <netinet/in.h>
#include <uv.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "addon_acceptor.h"
#include "addon_args.h"
#include "handshake_io.h"
#include "syscall_error.h"

namespace splicer {

namespace {

enum EventKind { kAccepted = 1, kData, kEof, kFailed, kConnected, kDrained, kListenFailed };

// "::ffff:127.0.0.1" for a v4-mapped peer, as Node's socket.remoteAddress says it.
std::string HostOf(const sockaddr_storage& address, int* port) {
  char text[INET6_ADDRSTRLEN] = "";
  if (address.ss_family == AF_INET) {
    auto* v4 = reinterpret_cast<const sockaddr_in*>(&address);
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
    *port = ntohs(v4->sin_port);
  } else if (address.ss_family == AF_INET6) {
    auto* v6 = reinterpret_cast<const sockaddr_in6*>(&address);
    inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
    *port = ntohs(v6->sin6_port);
  } else {
    *port = 0;
  }
  return text;
}

class AcceptorWrap : public Napi::ObjectWrap<AcceptorWrap>, public HandshakeEvents {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Acceptor",
                       {
                           InstanceMethod<&AcceptorWrap::Listen>("listen"),
                           InstanceMethod<&AcceptorWrap::ListenerAddress>("listenerAddress"),
                           InstanceMethod<&AcceptorWrap::CloseListener>("closeListener"),
                           InstanceMethod<&AcceptorWrap::Connect>("connect"),
                           InstanceMethod<&AcceptorWrap::Write>("write"),
                           InstanceMethod<&AcceptorWrap::End>("end"),
                           InstanceMethod<&AcceptorWrap::Destroy>("destroy"),
                           InstanceMethod<&AcceptorWrap::TakeUnsent>("takeUnsent"),
                           InstanceMethod<&AcceptorWrap::Release>("release"),
                           InstanceMethod<&AcceptorWrap::SetHeld>("setHeld"),
                           InstanceMethod<&AcceptorWrap::Close>("close"),
                           InstanceMethod<&AcceptorWrap::Counts>("counts"),
                       });
  }

  AcceptorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AcceptorWrap>(info), context_(info.Env(), "splicer.Acceptor") {
    Napi::Env env = info.Env();
    if (!info[0].IsFunction()) throw Napi::TypeError::New(env, "onEvent must be a function, got " + Describe(info[0]));
    onEvent_ = Napi::Persistent(info[0].As<Napi::Function>());
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "no event loop");
    try {
      io_ = std::make_unique<HandshakeIo>(loop, this);
    } catch (const SyscallError& err) {
      throw ErrnoError(env, err.Errno(), err.Syscall());
    }
    // At exit (or a worker thread's end) every fd is closed and libuv's handles let go.
    napi_add_env_cleanup_hook(env, Cleanup, this);
    cleanupHookSet_ = true;
    env_ = env;
  }

  ~AcceptorWrap() override {
    if (cleanupHookSet_) napi_remove_env_cleanup_hook(env_, Cleanup, this);
    io_.reset();
  }

  // HandshakeEvents: each a call into JS with its own handle scope. A throw is raised as an
  // uncaught exception after the current event, as a throw in a socket's handler would be.
  void Accepted(uint32_t listener, uint64_t id, const sockaddr_storage& peer) override {
    Napi::HandleScope scope(env_);
    int port = 0;
    std::string host = HostOf(peer, &port);
    Emit({Num(kAccepted), Num(id), Num(listener), Napi::String::New(env_, host), Num(port)});
  }
  void ListenFailed(uint32_t listener, int error) override {
    Napi::HandleScope scope(env_);
    Emit({Num(kListenFailed), Num(listener), Num(error)});
  }
  void Data(uint64_t id, const char* data, size_t length) override {
    Napi::HandleScope scope(env_);
    Emit({Num(kData), Num(id), Napi::Buffer<char>::Copy(env_, data, length)});
  }
  void Eof(uint64_t id) override {
    Napi::HandleScope scope(env_);
    Emit({Num(kEof), Num(id)});
  }
  void Failed(uint64_t id, int error) override {
    Napi::HandleScope scope(env_);
    Emit({Num(kFailed), Num(id), Num(error)});
  }
  void Connected(uint64_t id, int error, const sockaddr_storage* local) override {
    Napi::HandleScope scope(env_);
    if (error != 0 || local == nullptr) {
      Emit({Num(kConnected), Num(id), Num(error)});
      return;
    }
    int port = 0;
    std::string host = HostOf(*local, &port);
    Emit({Num(kConnected), Num(id), Num(0), Napi::String::New(env_, host), Num(port)});
  }
  void Drained(uint64_t id) override {
    Napi::HandleScope scope(env_);
    Emit({Num(kDrained), Num(id)});
  }

 private:
  static void Cleanup(void* self) {
    auto* wrap = static_cast<AcceptorWrap*>(self);
    wrap->cleanupHookSet_ = false;
    wrap->io_.reset();
    wrap->retired_.reset();
  }

  Napi::Number Num(double value) { return Napi::Number::New(env_, value); }

  void Emit(const std::initializer_list<napi_value>& args) {
    try {
      onEvent_.MakeCallback(Value(), args, context_);
    } catch (const Napi::Error& err) {
      napi_fatal_exception(env_, err.Value());
    }
  }

  HandshakeIo& Io(Napi::Env env) {
    if (!io_) {
      Napi::Error err = Napi::Error::New(env, "acceptor is closed");
      err.Set("code", Napi::String::New(env, "ERR_ACCEPTOR_CLOSED"));
      throw err;
    }
    return *io_;
  }

  // listen(fd, hold?): takes a listening fd (openListener's) over; returns the listener's id.
  // hold: its connections are not read until released.
  Napi::Value Listen(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = FdArg(env, info[0], "fd");
    bool hold = info[1].ToBoolean().Value();
    try {
      return Num(Io(env).Listen(fd, hold));
    } catch (const SyscallError& err) {
      throw ErrnoError(env, err.Errno(), err.Syscall());
    }
  }

  // [host, port], or undefined for an unknown listener.
  Napi::Value ListenerAddress(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t id = static_cast<uint32_t>(IntegerArg(env, info[0], "listener", 1, 4294967295.0));
    sockaddr_storage local{};
    if (!Io(env).LocalAddress(id, &local)) return env.Undefined();
    int port = 0;
    std::string host = HostOf(local, &port);
    Napi::Array out = Napi::Array::New(env, 2);
    out.Set(0u, Napi::String::New(env, host));
    out.Set(1u, Num(port));
    return out;
  }

  void CloseListener(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t id = static_cast<uint32_t>(IntegerArg(env, info[0], "listener", 1, 4294967295.0));
    if (io_) io_->CloseListener(id);
  }

  // connect(host, port): host a numeric address. Returns the connection id; the outcome comes
  // as a `connected` event. Throws (EINVAL for a host that is not an address, EMFILE...).
  Napi::Value Connect(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) throw Napi::TypeError::New(env, "host must be a string, got " + Describe(info[0]));
    std::string host = info[0].As<Napi::String>().Utf8Value();
    uint16_t port = static_cast<uint16_t>(IntegerArg(env, info[1], "port", 0, 65535));
    sockaddr_storage to{};
    socklen_t length = 0;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&to);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&to);
    if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
      v4->sin_family = AF_INET;
      v4->sin_port = htons(port);
      length = sizeof(sockaddr_in);
    } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
      v6->sin6_family = AF_INET6;
      v6->sin6_port = htons(port);
      length = sizeof(sockaddr_in6);
    } else {
      throw ErrnoError(env, EINVAL, "inet_pton");
    }
    int error = 0;
    uint64_t id = Io(env).Connect(to, length, &error);
    if (id == 0) throw ErrnoError(env, error, "socket");
    return Num(static_cast<double>(id));
  }

  // write(id, bytes): 0 all written, 1 the rest queued, or -errno.
  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t id = IdArg(env, info[0], "id");
    if (!IsBytes(info[1])) throw Napi::TypeError::New(env, "data must be a Buffer, got " + Describe(info[1]));
    auto data = info[1].As<Napi::Buffer<char>>();
    if (!io_) return Num(-EBADF);
    return Num(io_->Write(id, data.Data(), data.Length()));
  }

  // end(id, bytes?): the last bytes, FIN, then a `drained` event once the peer closes.
  void End(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t id = IdArg(env, info[0], "id");
    const char* data;
    size_t length;
    OptionalBufferArg(env, info[1], "data", &data, &length);
    if (io_) io_->End(id, data, length);
  }

  // destroy(id, reset?): reset sends the peer a RST (SO_LINGER 0).
  void Destroy(const Napi::CallbackInfo& info) {
    uint64_t id = IdArg(info.Env(), info[0], "id");
    bool reset = info[1].ToBoolean().Value();
    if (io_) io_->Destroy(id, reset);
  }

  // The bytes queued and not yet written, or null.
  Napi::Value TakeUnsent(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t id = IdArg(env, info[0], "id");
    if (!io_) return env.Null();
    std::string unsent = io_->TakeUnsent(id);
    if (unsent.empty()) return env.Null();
    return Napi::Buffer<char>::Copy(env, unsent.data(), unsent.size());
  }

  // setHeld(id, held): held, its bytes wait in the kernel; not held, they come as `data` events.
  void SetHeld(const Napi::CallbackInfo& info) {
    uint64_t id = IdArg(info.Env(), info[0], "id");
    bool held = info[1].ToBoolean().Value();
    if (io_) io_->SetHeld(id, held);
  }

  // release(id): the fd, now the caller's; -1 for an unknown id.
  Napi::Value Release(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t id = IdArg(env, info[0], "id");
    if (!io_) return Num(-1);
    return Num(io_->Release(id));
  }

  // Closes every listener and connection; later calls throw ERR_ACCEPTOR_CLOSED (write
  // returns -EBADF, destroy and end do nothing).
  // A close from inside one of the acceptor's own events (a handler that ends the server) must not
  // free the HandshakeIo whose Dispatch is on the stack: it is shut down, and kept until the end.
  void Close(const Napi::CallbackInfo& info) {
    if (!io_) return;
    io_->Shutdown();
    retired_ = std::move(io_);
  }

  Napi::Value Counts(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("connections", Num(io_ ? static_cast<double>(io_->ConnectionCount()) : 0));
    out.Set("listeners", Num(io_ ? static_cast<double>(io_->ListenerCount()) : 0));
    return out;
  }

  Napi::Env env_ = nullptr;
  Napi::FunctionReference onEvent_;
  Napi::AsyncContext context_;
  std::unique_ptr<HandshakeIo> io_;
  std::unique_ptr<HandshakeIo> retired_;  // shut down by close(); freed with the wrap
  bool cleanupHookSet_ = false;
};

}  // namespace

Napi::Function InitAcceptor(Napi::Env env) { return AcceptorWrap::Init(env); }

}  // namespace splicer
