/*
 * greeter: a minimal accept loop, meant to be linked statically.
 *
 * Usage: greeter
 *
 * Listens on 127.0.0.1 (a free port, printed as "port=N"), greets each
 * client with "hello" and keeps its connection open until the client
 * closes it.  Single-threaded: poll over the listener and the clients.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CLIENTS 64

static int listen_loopback(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(fd, 64) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
		perror("greeter: listen");
		return -1;
	}
	printf("port=%d\n", ntohs(sin.sin_port));
	fflush(stdout);
	return fd;
}

/* Accept one client into the first free slot, or turn it away. */
static void take(int lfd, struct pollfd *p)
{
	int fd = accept(lfd, NULL, NULL);

	if (fd < 0)
		return;
	for (int i = 1; i <= MAX_CLIENTS; i++) {
		if (p[i].fd < 0) {
			p[i].fd = fd;
			p[i].events = POLLIN;
			(void)!write(fd, "hello\n", 6);
			return;
		}
	}
	close(fd);
}

/* A client spoke or left: drain it, and close it on EOF or error. */
static void serve(struct pollfd *c)
{
	char buf[256];

	if (read(c->fd, buf, sizeof(buf)) > 0)
		return;
	close(c->fd);
	c->fd = -1;
}

int main(void)
{
	struct pollfd p[MAX_CLIENTS + 1];

	p[0].fd = listen_loopback();
	p[0].events = POLLIN;
	if (p[0].fd < 0)
		return 1;
	for (int i = 1; i <= MAX_CLIENTS; i++)
		p[i].fd = -1;
	for (;;) {
		if (poll(p, MAX_CLIENTS + 1, -1) < 0)
			continue;
		for (int i = 1; i <= MAX_CLIENTS; i++)
			if (p[i].fd >= 0 && p[i].revents)
				serve(&p[i]);
		if (p[0].revents & POLLIN)
			take(p[0].fd, p);
	}
}
