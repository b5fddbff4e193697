/*
 * speexdsp's adaptive jitter buffer behind the trace interface of `earshot jitter-sim`
 * (src/media/jitter_sim.rs): reads a CSV trace `arrival_ms,seq,rtp_ts` (header first, arrival
 * order) on stdin and prints one `tick_ms,seq` line per 20 ms playout tick, or `tick_ms,-` when
 * no received frame is played. Tick k is at the first arrival + 20 k ms; every packet with
 * arrival <= tick is put before that tick's frame is taken.
 *
 * Usage as documented in speex_jitter.h and speexclient: jitter_buffer_init(160) (timestamps in
 * 8 kHz samples, one 20 ms frame per step), jitter_buffer_put() with timestamp = RTP timestamp,
 * span = 160, sequence = RTP seq; per tick jitter_buffer_get(160) then jitter_buffer_tick().
 * Defaults are kept (margin 0, max late rate 4 %, late cutoff 50) unless argv[1] is `mumble`:
 * then Mumble's settings (AudioOutputSpeech: JITTER_BUFFER_SET_MARGIN of one frame, its default
 * jitter buffer size of 1, and jitter_buffer_update_delay() whenever a get finds no frame).
 *
 * Built by benches/jitter_peers.rs: cc -O2 speex_jb.c -lspeexdsp
 */
#include <speex/speex_jitter.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace.h"

int main(int argc, char **argv)
{
	struct packet *p = NULL;
	long n = read_trace(&p);
	if (n < 0) {
		fprintf(stderr, "speex_jb: malformed trace\n");
		return 1;
	}
	if (n == 0)
		return 0;
	JitterBuffer *jb = jitter_buffer_init(160);
	const int mumble = argc > 1 && strcmp(argv[1], "mumble") == 0;
	if (mumble) {
		spx_int32_t margin = 160;
		jitter_buffer_ctl(jb, JITTER_BUFFER_SET_MARGIN, &margin);
	}
	const int64_t first = p[0].arrival_us, last = p[n - 1].arrival_us;
	long next = 0;
	for (int64_t k = 0;; k++) {
		const int64_t tick = first + 20000 * k;
		for (; next < n && p[next].arrival_us <= tick; next++) {
			/* The payload carries the sequence number (it is copied in and out). */
			char data[4];
			memcpy(data, &p[next].seq, sizeof p[next].seq);
			JitterBufferPacket in = {
				.data = data,
				.len = 2,
				.timestamp = p[next].ts,
				.span = 160,
				.sequence = p[next].seq,
				.user_data = 0,
			};
			jitter_buffer_put(jb, &in);
		}
		if (next >= n) {
			spx_int32_t left = 0;
			jitter_buffer_ctl(jb, JITTER_BUFFER_GET_AVAILABLE_COUNT, &left);
			if (left == 0 || tick > last + 2000000)
				break;
		}
		char buf[16];
		JitterBufferPacket out = {.data = buf, .len = sizeof buf};
		spx_int32_t offset = 0;
		int status = jitter_buffer_get(jb, &out, 160, &offset);
		print_tick(tick, status == JITTER_BUFFER_OK, out.sequence);
		if (mumble && status != JITTER_BUFFER_OK)
			jitter_buffer_update_delay(jb, &out, NULL);
		jitter_buffer_tick(jb);
	}
	jitter_buffer_destroy(jb);
	free(p);
	return 0;
}
