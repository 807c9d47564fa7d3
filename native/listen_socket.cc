#include "listen_socket.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "syscall_error.h"
#include "unique_fd.h"

namespace splicer {

int OpenListener(const ListenSpec& spec) {
  sockaddr_storage address{};
  socklen_t length = 0;
  int family = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
  if (inet_pton(AF_INET, spec.host, &v4->sin_addr) == 1) {
    family = v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(spec.port));
    length = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, spec.host, &v6->sin6_addr) == 1) {
    family = v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(spec.port));
    length = sizeof(sockaddr_in6);
  } else {
    throw SyscallError(EINVAL, "inet_pton");
  }

  UniqueFd fd(socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.Valid()) throw SyscallError(errno, "socket");
  int on = 1;
  // As libuv does for every TCP listener: a restart may bind while old connections linger in TIME_WAIT.
  if (setsockopt(fd.Get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0) throw SyscallError(errno, "setsockopt");
  if (spec.reusePort && setsockopt(fd.Get(), SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) {
    throw SyscallError(errno, "setsockopt");
  }
  if (family == AF_INET6) {
    // "::" takes IPv4 too, as Node's listen() does.
    int off = 0;
    setsockopt(fd.Get(), IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
  }
  if (bind(fd.Get(), reinterpret_cast<sockaddr*>(&address), length) != 0) throw SyscallError(errno, "bind");
  if (listen(fd.Get(), spec.backlog) != 0) throw SyscallError(errno, "listen");
  return fd.Release();
}

}  // namespace splicer
