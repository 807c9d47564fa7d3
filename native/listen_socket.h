// A listening TCP socket made here rather than by libuv, for what Node 20 cannot ask for:
// SO_REUSEPORT, so that several processes (workers) each hold their own socket on one port
// and the kernel spreads connections over them.
#pragma once

namespace splicer {

struct ListenSpec {
  const char* host = nullptr;  // a numeric IPv4 or IPv6 address
  int port = 0;
  int backlog = 511;           // Node's default
  bool reusePort = false;
};

// Returns a non-blocking, close-on-exec listening fd the caller owns. Throws SyscallError
// (socket, setsockopt, bind, listen; EINVAL for a host that is not a numeric address) and
// leaves nothing open.
int OpenListener(const ListenSpec& spec);

}  // namespace splicer
