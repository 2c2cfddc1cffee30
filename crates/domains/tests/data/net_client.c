// SPDX-License-Identifier: MIT
// Network test helper for the user-mode network backends (preload hooks and sock_diag). Each mode does one
// network thing through libc (or, for `rawconnect`, around it) and prints one line saying what happened, so the
// tests can compare what the program did with what the agent reported.
//
//   net_client connect ADDR PORT         TCP connect, send "ping\n", read the reply; "ok <reply>" or "err <errno>"
//   net_client rawconnect ADDR PORT      the same connect through syscall(SYS_connect): bypasses the hook
//   net_client udp ADDR PORT N           N sendto()s of 32 bytes from one socket; "ok" or "err <errno>"
//   net_client resolve NAME PORT         getaddrinfo(NAME), print the addresses, TCP connect to the first IPv4 one
//   net_client hostbyname NAME           gethostbyname(NAME), print the addresses
//   net_client http ADDR PORT HOST       connect, send a plain HTTP/1.0 request with Host: HOST, print the reply
//   net_client hold ADDR PORT MS BYTES   connect, send BYTES bytes, stay connected MS ms, close; "ok"
//   net_client storm ADDR PORT N         N connect+close in a row; "ok <elapsed_us>"
//   net_client serve PORT MS             listen on 127.0.0.1:PORT, accept and answer for MS ms (echo "pong\n")
//
// ADDR is an IPv4 or IPv6 literal. With RW_TRAP set (and malloc_trap.so preloaded), the allocator aborts the
// program if anything allocates during a connect or sendto call: the hook's path must not allocate.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "net_addr.h"

static long long now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int tcp_connect(const char *addr, int port, int raw)
{
	struct sockaddr_storage ss;
	socklen_t len = make_addr(addr, port, &ss);
	int fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	int rc =
	    raw ? (int)syscall(SYS_connect, fd, (struct sockaddr *)&ss, len) : connect(fd, (struct sockaddr *)&ss, len);
	if (rc != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int ping(const char *addr, int port, int raw)
{
	int fd = tcp_connect(addr, port, raw);
	if (fd < 0) {
		printf("err %d\n", errno);
		return 1;
	}
	char buf[64] = {0};
	if (write(fd, "ping\n", 5) != 5) {
		printf("err %d\n", errno);
		return 1;
	}
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0) {
		printf("err %d\n", errno);
		return 1;
	}
	buf[n] = 0;
	printf("ok %s", buf);
	return 0;
}

static int serve(int port, int ms)
{
	int l = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_storage ss;
	socklen_t len = make_addr("127.0.0.1", port, &ss);
	if (bind(l, (struct sockaddr *)&ss, len) != 0 || listen(l, 128) != 0) {
		printf("err %d\n", errno);
		return 1;
	}
	printf("listening\n");
	fflush(stdout);
	long long end = now_us() + (long long)ms * 1000;
	while (now_us() < end) {
		struct pollfd p = {.fd = l, .events = POLLIN};
		if (poll(&p, 1, 50) <= 0)
			continue;
		int c = accept(l, NULL, NULL);
		if (c < 0)
			continue;
		char buf[4096];
		struct pollfd q = {.fd = c, .events = POLLIN};
		// Read what the client sends (until it closes or goes quiet), answering once.
		int answered = 0;
		while (poll(&q, 1, 2000) > 0) {
			ssize_t n = read(c, buf, sizeof(buf));
			if (n <= 0)
				break;
			if (!answered) {
				answered = 1;
				if (write(c, "pong\n", 5) != 5)
					break;
			}
		}
		close(c);
	}
	close(l);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	const char *mode = argv[1];
	if (!strcmp(mode, "connect") && argc == 4)
		return ping(argv[2], atoi(argv[3]), 0);
	if (!strcmp(mode, "rawconnect") && argc == 4)
		return ping(argv[2], atoi(argv[3]), 1);
	if (!strcmp(mode, "udp") && argc == 5) {
		struct sockaddr_storage ss;
		socklen_t len = make_addr(argv[2], atoi(argv[3]), &ss);
		int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
		char payload[32] = "datagram";
		for (int i = 0; i < atoi(argv[4]); i++) {
			if (sendto(fd, payload, sizeof(payload), 0, (struct sockaddr *)&ss, len) < 0) {
				printf("err %d\n", errno);
				return 1;
			}
		}
		printf("ok\n");
		return 0;
	}
	if (!strcmp(mode, "resolve") && argc == 4) {
		struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
		int rc = getaddrinfo(argv[2], NULL, &hints, &res);
		if (rc != 0) {
			printf("err %s\n", gai_strerror(rc));
			return 1;
		}
		char first[INET6_ADDRSTRLEN] = "";
		for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
			char s[INET6_ADDRSTRLEN];
			void *a = ai->ai_family == AF_INET ? (void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
							   : (void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
			inet_ntop(ai->ai_family, a, s, sizeof(s));
			printf("addr %s\n", s);
			if (!first[0] && ai->ai_family == AF_INET)
				strcpy(first, s);
		}
		freeaddrinfo(res);
		return first[0] ? ping(first, atoi(argv[3]), 0) : 1;
	}
	if (!strcmp(mode, "hostbyname") && argc == 3) {
		struct hostent *he = gethostbyname(argv[2]);
		if (!he) {
			printf("err %d\n", h_errno);
			return 1;
		}
		for (char **a = he->h_addr_list; *a; a++) {
			char s[INET6_ADDRSTRLEN];
			inet_ntop(he->h_addrtype, *a, s, sizeof(s));
			printf("addr %s\n", s);
		}
		return 0;
	}
	if (!strcmp(mode, "http") && argc == 5) {
		int fd = tcp_connect(argv[2], atoi(argv[3]), 0);
		if (fd < 0) {
			printf("err %d\n", errno);
			return 1;
		}
		char req[512];
		int n = snprintf(req, sizeof(req), "GET / HTTP/1.0\r\nHost: %s\r\nUser-Agent: rw\r\n\r\n", argv[4]);
		if (write(fd, req, n) != n) {
			printf("err %d\n", errno);
			return 1;
		}
		char buf[4096] = {0};
		ssize_t got = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (got < 0) {
			printf("err %d\n", errno);
			return 1;
		}
		buf[got] = 0;
		printf("ok %s", buf);
		return 0;
	}
	if (!strcmp(mode, "hold") && argc == 6) {
		int fd = tcp_connect(argv[2], atoi(argv[3]), 0);
		if (fd < 0) {
			printf("err %d\n", errno);
			return 1;
		}
		static char chunk[65536];
		long left = atol(argv[5]);
		while (left > 0) {
			ssize_t n = write(fd, chunk, left < (long)sizeof(chunk) ? left : sizeof(chunk));
			if (n <= 0)
				break;
			left -= n;
		}
		usleep(atoi(argv[4]) * 1000);
		close(fd);
		printf("ok\n");
		return 0;
	}
	if (!strcmp(mode, "storm") && argc == 5) {
		long long start = now_us();
		for (int i = 0; i < atoi(argv[4]); i++) {
			int fd = tcp_connect(argv[2], atoi(argv[3]), 0);
			if (fd < 0) {
				printf("err %d\n", errno);
				return 1;
			}
			close(fd);
		}
		printf("ok %lld\n", now_us() - start);
		return 0;
	}
	if (!strcmp(mode, "serve") && argc == 4)
		return serve(atoi(argv[2]), atoi(argv[3]));
	fprintf(stderr, "usage: see the file header\n");
	return 2;
}
