#include "notify_socket.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "syscall_error.h"
#include "unique_fd.h"

namespace splicer {

void SendNotify(const std::string& path, const char* data, size_t length) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) throw SyscallError(ENAMETOOLONG, "sendto");
  std::memcpy(address.sun_path, path.data(), path.size());
  socklen_t addressLength = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  if (path[0] == '@') {
    // Abstract: a leading NUL, and the name is exactly the bytes that follow (no terminator).
    address.sun_path[0] = '\0';
  } else {
    addressLength += 1;
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.Valid()) throw SyscallError(errno, "socket");
  ssize_t sent;
  do {
    sent = sendto(fd.Get(), data, length, MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&address), addressLength);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) throw SyscallError(errno, "sendto");
}

}  // namespace splicer
