/*
 * The trace side shared by the C jitter-buffer peers (speex_jb.c): reads the CSV
 * trace `arrival_ms,seq,rtp_ts` of `earshot jitter-sim` (src/media/jitter_sim.rs) from stdin and
 * prints its `tick_ms,seq` / `tick_ms,-` lines. Header-only: each peer is one translation unit.
 */
#ifndef EARSHOT_TRACE_H
#define EARSHOT_TRACE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct packet {
	int64_t arrival_us;
	uint16_t seq;
	uint32_t ts;
};

/* Reads the trace; returns the packet count, or -1 on a malformed line. */
static long read_trace(struct packet **out)
{
	char line[256];
	size_t cap = 4096, n = 0;
	struct packet *p = malloc(cap * sizeof(*p));
	if (!p || !fgets(line, sizeof line, stdin) || strncmp(line, "arrival_ms,seq,rtp_ts", 21))
		return -1;
	while (fgets(line, sizeof line, stdin)) {
		double ms;
		unsigned long seq, ts;
		if (line[0] == '\n' || line[0] == '\r')
			continue;
		if (sscanf(line, "%lf,%lu,%lu", &ms, &seq, &ts) != 3)
			return -1;
		if (n == cap) {
			cap *= 2;
			p = realloc(p, cap * sizeof(*p));
			if (!p)
				return -1;
		}
		p[n].arrival_us = (int64_t)(ms * 1000.0 + 0.5);
		p[n].seq = (uint16_t)seq;
		p[n].ts = (uint32_t)ts;
		n++;
	}
	*out = p;
	return (long)n;
}

static void print_tick(int64_t tick_us, int played, uint16_t seq)
{
	if (played)
		printf("%lld.%03lld,%u\n", (long long)(tick_us / 1000), (long long)(tick_us % 1000), seq);
	else
		printf("%lld.%03lld,-\n", (long long)(tick_us / 1000), (long long)(tick_us % 1000));
}

#endif
