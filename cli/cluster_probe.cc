// `hetsynth cluster probe`, run as every rank of `hetsynth cluster run -- hetsynth cluster probe`:
// plain TCP sockets between the ranks' namespaces measure what the tbf shaping lets through.
// Every other rank connects to rank 0; all of them send to rank 0 at once (rank 0's NIC in is
// the shared bottleneck), then rank 0 sends to all of them at once (its NIC out), then a 1-byte
// ping-pong with each. Rank 0 prints measured vs configured.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "emulated_cluster.h"
#include "hetsynth/base/status.h"

namespace hetsynth::cli {
namespace {

constexpr int kPingPongs = 200;
constexpr int kConnectTimeoutS = 30;
constexpr double kHeaderShare = 1.0 - 1448.0 / 1514.0;  // TCP/IP + Ethernet headers at MTU 1500, timestamps on

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

class Socket {
 public:
  explicit Socket(int fd = -1) : fd_(fd) {}
  Socket(Socket&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Socket& operator=(Socket&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  int fd() const { return fd_; }

 private:
  int fd_;
};

absl::Status Errno(const std::string& what) { return absl::UnavailableError(StrCat("cluster probe: ", what, ": ", std::strerror(errno))); }

absl::Status SendAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return Errno("send");
    p += k, n -= static_cast<size_t>(k);
  }
  return absl::OkStatus();
}

absl::Status RecvAll(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t k = recv(fd, p, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k == 0) return absl::UnavailableError("cluster probe: the peer closed the connection");
    if (k < 0) return Errno("recv");
    p += k, n -= static_cast<size_t>(k);
  }
  return absl::OkStatus();
}

// Sends `bytes` bytes in 1 MiB writes.
absl::Status SendBulk(int fd, int64_t bytes) {
  std::vector<char> buf(size_t{1} << 20, 'x');
  while (bytes > 0) {
    const size_t n = static_cast<size_t>(std::min<int64_t>(bytes, static_cast<int64_t>(buf.size())));
    HS_RETURN_IF_ERROR(SendAll(fd, buf.data(), n));
    bytes -= static_cast<int64_t>(n);
  }
  return absl::OkStatus();
}

struct Timing {
  double first = 0, last = 0;  // steady clock seconds: first and last byte received
  int64_t first_chunk = 0;     // bytes of the first read (arrived by `first`)
};

// Receives `bytes` bytes, timing the first and last byte.
absl::StatusOr<Timing> RecvBulk(int fd, int64_t bytes) {
  std::vector<char> buf(size_t{1} << 20);
  Timing t;
  int64_t got = 0;
  while (got < bytes) {
    const ssize_t k = recv(fd, buf.data(), static_cast<size_t>(std::min<int64_t>(bytes - got, static_cast<int64_t>(buf.size()))), 0);
    if (k < 0 && errno == EINTR) continue;
    if (k == 0) return absl::UnavailableError("cluster probe: the peer closed the connection mid-transfer");
    if (k < 0) return Errno("recv");
    if (got == 0) t.first = Now(), t.first_chunk = k;
    got += k;
  }
  t.last = Now();
  return t;
}

double Rate(const Timing& t, int64_t bytes) {
  return t.last > t.first ? static_cast<double>(bytes - t.first_chunk) / (t.last - t.first) : 0;
}

void NoDelay(int fd) {
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::atoi(v) : fallback;
}

std::string MBs(double r) { return fmt::format("{:.2f} MB/s", r / 1e6); }

// Runs fn(i) for i in [0, n) on n threads; the first error.
template <typename Fn>
absl::Status Parallel(size_t n, Fn fn) {
  std::vector<absl::Status> st(n);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) threads.emplace_back([&, i] { st[i] = fn(i); });
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : st) HS_RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

absl::Status Client(const EmulatedClusterState& s, int rank, const ProbeOptions& o, int64_t bytes) {
  const std::string& address = s.nodes[static_cast<size_t>(s.rank_node[0])].address;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(o.port));
  inet_pton(AF_INET, address.c_str(), &to.sin_addr);
  Socket sock;
  const double deadline = Now() + kConnectTimeoutS;
  for (;;) {
    sock = Socket(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (sock.fd() < 0) return Errno("socket");
    if (connect(sock.fd(), reinterpret_cast<sockaddr*>(&to), sizeof to) == 0) break;
    if (Now() > deadline) return Errno(StrCat("connect to rank 0 at ", address, ":", o.port));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  NoDelay(sock.fd());
  const int32_t me = rank;
  HS_RETURN_IF_ERROR(SendAll(sock.fd(), &me, sizeof me));
  char go = 0;
  HS_RETURN_IF_ERROR(RecvAll(sock.fd(), &go, 1));  // all connected: send to rank 0
  HS_RETURN_IF_ERROR(SendBulk(sock.fd(), bytes));
  HS_ASSIGN_OR_RETURN(Timing t, RecvBulk(sock.fd(), bytes));  // rank 0 sends to everyone
  const double report[3] = {t.first, t.last, static_cast<double>(t.first_chunk)};
  HS_RETURN_IF_ERROR(SendAll(sock.fd(), report, sizeof report));
  for (;;) {  // echo until rank 0 says 'Q'
    char c = 0;
    HS_RETURN_IF_ERROR(RecvAll(sock.fd(), &c, 1));
    if (c == 'Q') return absl::OkStatus();
    HS_RETURN_IF_ERROR(SendAll(sock.fd(), &c, 1));
  }
}

absl::Status Server(const EmulatedClusterState& s, int size, const ProbeOptions& o, int64_t bytes) {
  Socket listener(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (listener.fd() < 0) return Errno("socket");
  const int one = 1;
  setsockopt(listener.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_port = htons(static_cast<uint16_t>(o.port));
  any.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(listener.fd(), reinterpret_cast<sockaddr*>(&any), sizeof any) != 0) return Errno(StrCat("bind port ", o.port));
  if (listen(listener.fd(), size) != 0) return Errno("listen");
  std::vector<Socket> peers(static_cast<size_t>(size));
  for (int i = 1; i < size; ++i) {
    pollfd p{listener.fd(), POLLIN, 0};
    if (poll(&p, 1, kConnectTimeoutS * 1000) <= 0) {
      return absl::DeadlineExceededError(StrCat("cluster probe: rank 0: only ", i - 1, " of ", size - 1,
                                                " ranks connected within ", kConnectTimeoutS, " s"));
    }
    Socket c(accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC));
    if (c.fd() < 0) return Errno("accept");
    NoDelay(c.fd());
    int32_t r = 0;
    HS_RETURN_IF_ERROR(RecvAll(c.fd(), &r, sizeof r));
    if (r <= 0 || r >= size || peers[static_cast<size_t>(r)].fd() >= 0) {
      return absl::InternalError(StrCat("cluster probe: unexpected rank ", r));
    }
    peers[static_cast<size_t>(r)] = std::move(c);
  }
  const size_t n = static_cast<size_t>(size - 1);
  auto peer = [&](size_t i) { return peers[i + 1].fd(); };
  auto node_of = [&](int rank) { return s.rank_node[static_cast<size_t>(rank)]; };
  auto label = [&](int rank) {
    return fmt::format("rank {} (node {})", rank, s.nodes[static_cast<size_t>(node_of(rank))].name);
  };

  // Into rank 0, all at once.
  for (size_t i = 0; i < n; ++i) HS_RETURN_IF_ERROR(SendAll(peer(i), "G", 1));
  std::vector<Timing> in(n), out(n);
  HS_RETURN_IF_ERROR(Parallel(n, [&](size_t i) -> absl::Status {
    HS_ASSIGN_OR_RETURN(in[i], RecvBulk(peer(i), bytes));
    return absl::OkStatus();
  }));
  // Out of rank 0, all at once; each rank reports its timing.
  HS_RETURN_IF_ERROR(Parallel(n, [&](size_t i) -> absl::Status {
    HS_RETURN_IF_ERROR(SendBulk(peer(i), bytes));
    double report[3];
    HS_RETURN_IF_ERROR(RecvAll(peer(i), report, sizeof report));
    out[i] = {report[0], report[1], static_cast<int64_t>(report[2])};
    return absl::OkStatus();
  }));
  // Round trips, one rank at a time.
  std::vector<std::vector<double>> rtt(n);
  for (size_t i = 0; i < n; ++i) {
    for (int k = 0; k < kPingPongs; ++k) {
      char c = 'P';
      const double t0 = Now();
      HS_RETURN_IF_ERROR(SendAll(peer(i), &c, 1));
      HS_RETURN_IF_ERROR(RecvAll(peer(i), &c, 1));
      rtt[i].push_back(Now() - t0);
    }
    HS_RETURN_IF_ERROR(SendAll(peer(i), "Q", 1));
    std::sort(rtt[i].begin(), rtt[i].end());
  }

  const double configured = s.shaped_bytes_per_s;
  fmt::print("probe: emulated cluster '{}': tbf {} bit/s = {} per NIC per direction (links.inter_node.bandwidth {} ÷ K {:g}); "
             "{} B per flow\n",
             s.name, s.rate_bits, MBs(configured), MBs(s.bandwidth), s.dilation, bytes);
  // into: every rank -> rank 0; out: rank 0 -> every rank.
  auto report = [&](bool into, const std::vector<Timing>& t) {
    double first = 1e300, last = 0;
    int64_t total = 0, early = 0;
    int inter = 0;
    for (size_t i = 0; i < n; ++i) {
      const int r = static_cast<int>(i) + 1;
      const bool cross = node_of(r) != node_of(0);
      fmt::print("probe: {} -> {}: {} {}{}\n", into ? label(r) : label(0), into ? label(0) : label(r),
                 MBs(Rate(t[i], bytes)), cross ? "inter-node" : "intra-node", cross ? "" : " (not shaped)");
      if (!cross) continue;
      ++inter;
      first = std::min(first, t[i].first), last = std::max(last, t[i].last);
      total += bytes, early += t[i].first_chunk;
    }
    if (inter == 0) {
      fmt::print("probe: no inter-node flows (every rank is on rank 0's node)\n");
      return;
    }
    const double measured = last > first ? static_cast<double>(total - early) / (last - first) : 0;
    fmt::print("probe: {} {} together ({} inter-node flow{}): measured {}, configured {}, ratio {:.3f} "
               "(TCP payload; headers are {:.1f}% of a full frame)\n",
               into ? "into" : "out of", label(0), inter, inter == 1 ? "" : "s", MBs(measured), MBs(configured),
               measured / configured, 100 * kHeaderShare);
  };
  report(true, in);
  report(false, out);
  for (size_t i = 0; i < n; ++i) {
    const int r = static_cast<int>(i) + 1;
    const bool cross = node_of(r) != node_of(0);
    fmt::print("probe: 1-byte round trip {} <-> rank 0: median {:.1f} µs, p90 {:.1f} µs{}\n", label(r),
               rtt[i][rtt[i].size() / 2] * 1e6, rtt[i][rtt[i].size() * 9 / 10] * 1e6,
               cross ? fmt::format("; configured 2 × latency × K = {:.1f} µs is not modelled", 2e6 * s.latency * s.dilation)
                     : std::string(" (intra-node)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunClusterProbe(const ProbeOptions& o) {
  const char* name = std::getenv("HETSYNTH_EMULATED_CLUSTER");
  if (name == nullptr) {
    return absl::FailedPreconditionError(
        "cluster probe runs as the ranks of 'hetsynth cluster run -- hetsynth cluster probe' (HETSYNTH_EMULATED_CLUSTER "
        "is not set)");
  }
  HS_ASSIGN_OR_RETURN(EmulatedClusterState s, ReadEmulatedClusterState(name));
  const int rank = EnvInt("OMPI_COMM_WORLD_RANK", -1), size = EnvInt("OMPI_COMM_WORLD_SIZE", 0);
  if (rank < 0 || size != static_cast<int>(s.rank_node.size())) {
    return absl::FailedPreconditionError(StrCat("cluster probe: expected one of ", s.rank_node.size(),
                                                " mpirun ranks of emulated cluster '", name, "' (OMPI_COMM_WORLD_RANK ",
                                                rank, ", OMPI_COMM_WORLD_SIZE ", size, ")"));
  }
  if (size < 2) return absl::FailedPreconditionError(StrCat("cluster probe: emulated cluster '", name, "' has one rank; nothing to measure"));
  const int64_t bytes = std::clamp<int64_t>(static_cast<int64_t>(s.shaped_bytes_per_s * o.seconds), int64_t{256} << 10,
                                            int64_t{8} << 30);
  return rank == 0 ? Server(s, size, o, bytes) : Client(s, rank, o, bytes);
}

}  // namespace hetsynth::cli
