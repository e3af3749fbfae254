// Reading a whole file given on the command line, refusing what is not a regular file before
// reading a byte: a directory, a device (/dev/zero never ends), a FIFO (a read blocks forever).
//
//   HS_ASSIGN_OR_RETURN(std::string bytes, ir::ReadRegularFile(path, StrCat("model file '", path, "'")));
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace hetsynth::ir {

// The bytes of the regular file at `path`; errors begin with `what` (e.g. "model file 'm.onnx'").
// Opened with O_NONBLOCK so that opening a FIFO without a writer does not block either.
inline absl::StatusOr<std::string> ReadRegularFile(const std::string& path, const std::string& what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return absl::NotFoundError(absl::StrCat(what, ": cannot open it (", std::strerror(err), ")"));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const bool dir = S_ISDIR(st.st_mode);
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(what, dir ? ": is a directory" : ": is not a regular file (a device, FIFO or socket)",
                                                   "; expected a file"));
  }
  std::string bytes;
  bytes.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t got = ::read(fd, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int err = errno;
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat(what, ": cannot read it (", std::strerror(err), ")"));
    }
    if (got == 0) break;
    bytes.append(buf, static_cast<size_t>(got));
  }
  ::close(fd);
  return bytes;
}

}  // namespace hetsynth::ir
