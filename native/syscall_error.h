// A system call that failed while the engine set itself up (epoll_create1, eventfd,
// pthread_create...). Carries the errno and the call's name so that the JS side can throw an
// Error with `code` and `syscall`, as Node's own errors have. A std::system_error, so code
// that only cares about the errno can catch that.
#pragma once

#include <system_error>

namespace splicer {

class SyscallError : public std::system_error {
 public:
  SyscallError(int error, const char* syscall)
      : std::system_error(error, std::generic_category(), syscall), syscall_(syscall) {}
  int Errno() const { return code().value(); }
  // A string literal: lives as long as the program.
  const char* Syscall() const { return syscall_; }

 private:
  const char* syscall_;
};

}  // namespace splicer
