// The datagram of systemd's notify protocol (sd_notify(3)) without libsystemd: one AF_UNIX
// SOCK_DGRAM sendto() to the socket $NOTIFY_SOCKET names. Node has no unix datagram sockets.
#pragma once

#include <cstddef>
#include <string>

namespace splicer {

// Sends `length` bytes as one datagram to `path`; a leading '@' names the abstract namespace.
// Throws SyscallError (socket, sendto; ENAMETOOLONG for a path sun_path cannot hold). Never
// blocks: a receiver whose queue is full is EAGAIN.
void SendNotify(const std::string& path, const char* data, size_t length);

}  // namespace splicer
