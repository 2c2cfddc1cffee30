// SPDX-License-Identifier: MIT
// Connection test helper for the preload network hooks' accept, close and sendmmsg: both ends of one TCP
// connection with exact byte counts, a batch of datagrams, and closes that must not be reported. Each mode prints
// one line saying what happened, so the tests can compare it with what the agent reported.
//
//   net_peer serve ADDR PORT NIN NOUT accept|accept4
//       listen on ADDR:PORT, print "listening", accept one connection, read exactly NIN bytes, write NOUT bytes,
//       read until the peer closes, close; "ok <peer port>"
//   net_peer client ADDR PORT NOUT NIN
//       connect, write NOUT bytes, read exactly NIN bytes, close with errno preset to EDOM;
//       "ok <local port> <close rc> <errno after close>"
//   net_peer mmsg ADDR PORT...
//       one unconnected UDP socket, one sendmmsg() of one 16-byte message per PORT; "sent <n>" or "err <errno>"
//   net_peer closes ADDR PORT
//       closes that are no connection the hook saw open (a file, a bad descriptor, a connected UDP socket, a stale
//       entry: a TCP socket closed behind the hook's back and its number reused by a file and by a raw-connected
//       socket); "ok" or "fail <what>"
//
// ADDR is an IPv4 or IPv6 literal. With RW_TRAP set (and malloc_trap.so preloaded), the allocator is armed around
// each accept, accept4, close and sendmmsg call: the hook's path must not allocate.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "net_addr.h"

static void (*trap_arm)(int);

static void arm(int on)
{
	if (trap_arm)
		trap_arm(on);
}

static int port_of(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static int close_armed(int fd)
{
	arm(1);
	int rc = close(fd);
	arm(0);
	return rc;
}

static int read_exactly(int fd, long n)
{
	static char buf[65536];
	while (n > 0) {
		ssize_t got = read(fd, buf, n < (long)sizeof(buf) ? n : (long)sizeof(buf));
		if (got <= 0)
			return -1;
		n -= got;
	}
	return 0;
}

static int write_all(int fd, long n)
{
	static char chunk[65536];
	while (n > 0) {
		ssize_t put = write(fd, chunk, n < (long)sizeof(chunk) ? n : (long)sizeof(chunk));
		if (put <= 0)
			return -1;
		n -= put;
	}
	return 0;
}

static int serve(const char *addr, int port, long nin, long nout, int use_accept4)
{
	struct sockaddr_storage ss;
	socklen_t len = make_addr(addr, port, &ss);
	int l = socket(ss.ss_family, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&ss, len) != 0 || listen(l, 8) != 0) {
		printf("err %d\n", errno);
		return 1;
	}
	printf("listening\n");
	fflush(stdout);
	struct pollfd p = {.fd = l, .events = POLLIN};
	if (poll(&p, 1, 10000) != 1) {
		printf("err timeout\n");
		return 1;
	}
	struct sockaddr_storage peer;
	socklen_t peer_len = sizeof(peer);
	arm(1);
	int c = use_accept4 ? accept4(l, (struct sockaddr *)&peer, &peer_len, SOCK_CLOEXEC)
			    : accept(l, (struct sockaddr *)&peer, &peer_len);
	arm(0);
	if (c < 0) {
		printf("err %d\n", errno);
		return 1;
	}
	if (read_exactly(c, nin) != 0 || write_all(c, nout) != 0) {
		printf("err %d\n", errno);
		return 1;
	}
	char b;
	while (read(c, &b, 1) > 0)
		;
	close_armed(c);
	close_armed(l);
	printf("ok %d\n", port_of(&peer));
	return 0;
}

static int client(const char *addr, int port, long nout, long nin)
{
	struct sockaddr_storage ss;
	socklen_t len = make_addr(addr, port, &ss);
	int fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&ss, len) != 0) {
		printf("err %d\n", errno);
		return 1;
	}
	struct sockaddr_storage local;
	socklen_t local_len = sizeof(local);
	getsockname(fd, (struct sockaddr *)&local, &local_len);
	if (write_all(fd, nout) != 0 || read_exactly(fd, nin) != 0) {
		printf("err %d\n", errno);
		return 1;
	}
	errno = EDOM;
	int rc = close_armed(fd);
	int e = errno;
	printf("ok %d %d %d\n", port_of(&local), rc, e);
	return 0;
}

static int mmsg(const char *addr, int nports, char **ports)
{
	struct sockaddr_storage dst[16];
	struct mmsghdr msgs[16];
	struct iovec iov[16];
	static char payload[16] = "datagram";
	if (nports > 16)
		return 2;
	memset(msgs, 0, sizeof(msgs));
	socklen_t len = 0;
	for (int i = 0; i < nports; i++) {
		len = make_addr(addr, atoi(ports[i]), &dst[i]);
		iov[i].iov_base = payload;
		iov[i].iov_len = sizeof(payload);
		msgs[i].msg_hdr.msg_name = &dst[i];
		msgs[i].msg_hdr.msg_namelen = len;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	int fd = socket(dst[0].ss_family, SOCK_DGRAM, 0);
	arm(1);
	int n = sendmmsg(fd, msgs, nports, 0);
	arm(0);
	if (n < 0)
		printf("err %d\n", errno);
	else
		printf("sent %d\n", n);
	close_armed(fd);
	return 0;
}

#define CHECK(cond, what)                                                                                              \
	do {                                                                                                           \
		if (!(cond)) {                                                                                         \
			printf("fail %s (errno %d)\n", what, errno);                                                   \
			return 1;                                                                                      \
		}                                                                                                      \
	} while (0)

static int closes(const char *addr, int port)
{
	struct sockaddr_storage ss;
	socklen_t len = make_addr(addr, port, &ss);

	// A file: closed, errno untouched.
	int f = open("/dev/null", O_RDONLY);
	errno = EDOM;
	CHECK(close_armed(f) == 0 && errno == EDOM, "close of a file");

	// A bad descriptor: the real close's EBADF comes through.
	errno = 0;
	CHECK(close_armed(-1) == -1 && errno == EBADF, "close(-1)");
	errno = 0;
	CHECK(close_armed(f) == -1 && errno == EBADF, "second close of a file");

	// A connected UDP socket: its connect is reported, its close is not (TCP only).
	int u = socket(ss.ss_family, SOCK_DGRAM, 0);
	CHECK(connect(u, (struct sockaddr *)&ss, len) == 0, "udp connect");
	CHECK(send(u, "x", 1, 0) == 1, "udp send");
	errno = EDOM;
	CHECK(close_armed(u) == 0 && errno == EDOM, "close of a udp socket");

	// A stale entry: a tracked TCP socket closed behind the hook's back, its number reused by a file...
	int t = socket(ss.ss_family, SOCK_STREAM, 0);
	CHECK(connect(t, (struct sockaddr *)&ss, len) == 0, "tcp connect");
	CHECK(syscall(SYS_close, t) == 0, "raw close");
	int reused = open("/dev/null", O_RDONLY);
	CHECK(reused == t, "the number is reused by the file");
	CHECK(close_armed(reused) == 0, "close of the file on a stale number");

	// ... and by a TCP socket connected with the raw system call (so not tracked): another socket, not reported.
	int t2 = socket(ss.ss_family, SOCK_STREAM, 0);
	CHECK(connect(t2, (struct sockaddr *)&ss, len) == 0, "second tcp connect");
	CHECK(syscall(SYS_close, t2) == 0, "second raw close");
	int raw = socket(ss.ss_family, SOCK_STREAM, 0);
	CHECK(raw == t2, "the number is reused by a socket");
	CHECK(syscall(SYS_connect, raw, (struct sockaddr *)&ss, len) == 0, "raw connect");
	CHECK(write(raw, "ping\n", 5) == 5, "write on the raw socket");
	char b[8];
	CHECK(read(raw, b, sizeof(b)) > 0, "read on the raw socket");
	errno = EDOM;
	CHECK(close_armed(raw) == 0 && errno == EDOM, "close of a socket on a stale number");
	printf("ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (getenv("RW_TRAP")) {
		trap_arm = (void (*)(int))dlsym(RTLD_DEFAULT, "rw_trap_arm");
		if (!trap_arm) {
			fprintf(stderr, "RW_TRAP set but malloc_trap.so is not loaded\n");
			return 2;
		}
	}
	if (argc < 2)
		return 2;
	const char *mode = argv[1];
	if (!strcmp(mode, "serve") && argc == 7)
		return serve(argv[2], atoi(argv[3]), atol(argv[4]), atol(argv[5]), !strcmp(argv[6], "accept4"));
	if (!strcmp(mode, "client") && argc == 6)
		return client(argv[2], atoi(argv[3]), atol(argv[4]), atol(argv[5]));
	if (!strcmp(mode, "mmsg") && argc >= 4)
		return mmsg(argv[2], argc - 3, argv + 3);
	if (!strcmp(mode, "closes") && argc == 4)
		return closes(argv[2], atoi(argv[3]));
	fprintf(stderr, "usage: see the file header\n");
	return 2;
}
