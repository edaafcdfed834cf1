/*
 * early.c - a preloaded library whose constructor runs before
 * libconnlimit's (LD_PRELOAD="libconnlimit.so early.so": the later
 * preload is initialised first) and calls close and accept, as sshd and
 * C++ static constructors do.  Prints what it saw on stdout.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int zone_mapped(void)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "r");
	int found = 0;

	while (f && fgets(line, sizeof line, f))
		found |= strstr(line, "connlimit-zone") != NULL;
	if (f)
		fclose(f);
	return found;
}

static int self_connect(int *lfd)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof sa;
	int c;

	sa.sin_addr.s_addr = htonl(0x7f000001);
	*lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (bind(*lfd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
	    listen(*lfd, 4) < 0 ||
	    getsockname(*lfd, (struct sockaddr *)&sa, &len) < 0)
		return -1;
	c = socket(AF_INET, SOCK_STREAM, 0);
	return connect(c, (struct sockaddr *)&sa, sizeof sa) < 0 ? -1 : c;
}

__attribute__((constructor)) static void early(void)
{
	int lfd, c, a;

	printf("early before-init=%d\n", !zone_mapped());
	printf("early close=%d\n", close(socket(AF_INET, SOCK_STREAM, 0)));
	c = self_connect(&lfd);
	a = accept(lfd, NULL, NULL);
	printf("early accept=%s after-init=%d\n", a >= 0 ? "ok" : "failed",
	       zone_mapped());
	close(a);
	close(c);
	close(lfd);
	fflush(stdout);
}
