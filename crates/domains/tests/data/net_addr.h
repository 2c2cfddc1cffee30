/* make_addr(): an IPv4 or IPv6 socket address from text, shared by the network test helpers. */
#ifndef RW_TEST_NET_ADDR_H
#define RW_TEST_NET_ADDR_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Fills `ss` with `addr`:`port` (IPv4 or IPv6 text); exits 2 on anything else. Returns the address length. */
static socklen_t make_addr(const char *addr, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		return sizeof(*sin);
	}
	if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		return sizeof(*sin6);
	}
	fprintf(stderr, "bad address %s\n", addr);
	exit(2);
}

#endif
