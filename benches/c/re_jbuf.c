/*
 * libre's jitter buffer (Debian libre-dev 1.1.0, the one baresip 1.0 links) behind the trace
 * interface of `earshot jitter-sim` (src/media/jitter_sim.rs): reads a CSV trace
 * `arrival_ms,seq,rtp_ts` (header first, arrival order) on stdin and prints one `tick_ms,seq`
 * line per 20 ms playout tick, or `tick_ms,-` when no received frame is played. Tick k is at the
 * first arrival + 20 k ms; every packet with arrival <= tick is put before that tick's frame is
 * taken.
 *
 * This jbuf (re_jbuf.h 1.1.0) has no adaptive mode: jbuf_alloc(min, max) in frames; jbuf_get
 * answers ENOENT until more than `min` frames are buffered, then hands out the lowest sequence
 * number; a put beyond `max` frames steals the oldest; a put whose seq + n is below the last
 * put's seq is late. baresip's `jitter_buffer_delay 5-10` (frames) default is used unless
 * argv[1] and argv[2] give min and max. Frames carry no payload (mem = NULL).
 *
 * Built by benches/jitter_peers.rs: cc -O2 re_jbuf.c -I/usr/include/re -lre
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <re_types.h>
#include <re_fmt.h>
#include <re_mem.h>
#include <re_mbuf.h>
#include <re_list.h>
#include <re_sa.h>
#include <re_rtp.h>
#include <re_jbuf.h>

#include "trace.h"

int main(int argc, char **argv)
{
	uint32_t min = 5, max = 10;
	if (argc > 2) {
		min = (uint32_t)atoi(argv[1]);
		max = (uint32_t)atoi(argv[2]);
	}
	struct packet *p = NULL;
	long n = read_trace(&p);
	if (n < 0) {
		fprintf(stderr, "re_jbuf: malformed trace\n");
		return 1;
	}
	if (n == 0)
		return 0;
	struct jbuf *jb = NULL;
	int err = jbuf_alloc(&jb, min, max);
	if (err) {
		fprintf(stderr, "re_jbuf: jbuf_alloc(%u, %u): %d\n", min, max, err);
		return 1;
	}
	const int64_t first = p[0].arrival_us, last = p[n - 1].arrival_us;
	long next = 0;
	for (int64_t k = 0;; k++) {
		const int64_t tick = first + 20000 * k;
		for (; next < n && p[next].arrival_us <= tick; next++) {
			struct rtp_header hdr;
			memset(&hdr, 0, sizeof hdr);
			hdr.ver = 2;
			hdr.pt = 0;
			hdr.seq = p[next].seq;
			hdr.ts = p[next].ts;
			hdr.ssrc = 0x7ace;
			(void)jbuf_put(jb, &hdr, NULL);
		}
		struct rtp_header got;
		void *mem = NULL;
		int status = jbuf_get(jb, &got, &mem);
		/* Once everything has arrived, stop when the buffer gives out (it keeps `min`). */
		if (next >= n && (status != 0 || tick > last + 2000000))
			break;
		print_tick(tick, status == 0, got.seq);
		mem_deref(mem);
	}
	mem_deref(jb);
	free(p);
	return 0;
}
