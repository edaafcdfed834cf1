/*
 * addr.c - turn a peer's sockaddr into a client key, hash it, print it.
 *
 * An IPv4 client has one key whichever listener it reached: a plain
 * AF_INET peer and an IPv4-mapped AF_INET6 peer both become ::ffff:a.b.c.d.
 * Ports and scope ids are not part of the key.  Printing is written here
 * rather than borrowed from inet_ntop so that it is async-signal-safe.
 */
#include <netinet/in.h>
#include <string.h>

#include "cl.h"

static const uint8_t v4_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0,
				       0, 0, 0xff, 0xff };

int cl_key_is_v4(const struct cl_key *k)
{
	return memcmp(k->b, v4_prefix, 12) == 0;
}

/* 0 on success, -1 when @sa is not an inet address we count. */
int cl_peer_from(const struct sockaddr *sa, socklen_t len,
		 struct cl_peer *out)
{
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *s4 = (const void *)sa;

		memcpy(out->key.b, v4_prefix, 12);
		memcpy(out->key.b + 12, &s4->sin_addr, 4);
		memcpy(out->raw, out->key.b, 16);
		out->port = ntohs(s4->sin_port);
		out->family = AF_INET;
		out->plen = 128;
		return 0;
	}
	if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *s6 = (const void *)sa;

		memcpy(out->key.b, &s6->sin6_addr, 16);
		memcpy(out->raw, &s6->sin6_addr, 16);
		out->port = ntohs(s6->sin6_port);
		out->family = AF_INET6;
		out->plen = 128;
		return 0;
	}
	return -1;
}

/* Seeded mix of the two halves (splitmix64 finaliser). */
static uint64_t mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Keep the first @plen of the 128 bits of @k, zero the rest. */
void cl_key_apply_prefix128(struct cl_key *k, unsigned plen)
{
	unsigned i;

	for (i = 0; i < 16; i++) {
		if (plen >= 8 * (i + 1))
			continue;
		k->b[i] &= plen > 8 * i ? (uint8_t)(0xff << (8 - plen % 8))
					: 0;
	}
}

uint64_t cl_key_hash(const struct cl_key *k, uint64_t seed)
{
	uint64_t a, b;

	memcpy(&a, k->b, 8);
	memcpy(&b, k->b + 8, 8);
	return mix(mix(a ^ seed) ^ b);
}

static size_t put_dec(char *p, unsigned v)
{
	char t[4];
	size_t n = 0, i;

	do {
		t[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		p[i] = t[n - 1 - i];
	return n;
}

static size_t put_hex(char *p, unsigned v)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;
	int shift, started = 0;

	for (shift = 12; shift >= 0; shift -= 4) {
		unsigned d = (v >> shift) & 15;

		if (d || started || shift == 0) {
			p[n++] = hex[d];
			started = 1;
		}
	}
	return n;
}

static size_t format_v4(const uint8_t *a, char *p)
{
	size_t n = 0;
	int i;

	for (i = 0; i < 4; i++) {
		if (i)
			p[n++] = '.';
		n += put_dec(p + n, a[i]);
	}
	return n;
}

/* Longest run of zero groups (length >= 2) for "::", RFC 5952. */
static void zero_run(const unsigned g[8], int *start, int *len)
{
	int i, j;

	*start = -1;
	*len = 1;
	for (i = 0; i < 8; i = j + 1) {
		for (j = i; j < 8 && g[j] == 0; j++)
			;
		if (j - i > *len) {
			*start = i;
			*len = j - i;
		}
	}
}

static size_t format_v6(const uint8_t *a, char *p)
{
	unsigned g[8];
	int i, zs, zl;
	size_t n = 0;

	for (i = 0; i < 8; i++)
		g[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
	zero_run(g, &zs, &zl);
	for (i = 0; i < 8; i++) {
		if (i == zs) {
			p[n++] = ':';
			if (i == 0)
				p[n++] = ':';
			i += zl - 1;
			continue;
		}
		n += put_hex(p + n, g[i]);
		if (i < 7)
			p[n++] = ':';
	}
	return n;
}

/* IPv4 keys print dotted, never in the mapped form.  @n >= 40. */
size_t cl_key_format(const struct cl_key *k, char *buf, size_t n)
{
	size_t len;

	if (n < 40)
		return 0;
	len = cl_key_is_v4(k) ? format_v4(k->b + 12, buf)
			      : format_v6(k->b, buf);
	buf[len] = '\0';
	return len;
}
