/*
 * LD_PRELOAD shim for scripts/bench-sip-load.sh: makes ALSA's "null" device keep real time.
 *
 * baresip plays every call through its own player; the cheapest one it has is ALSA's "null"
 * device, but that device accepts samples as fast as they are written, so baresip's player
 * threads spin (147 % CPU for 10 calls). A sound card blocks the writer until there is room;
 * this shim does the same: after each snd_pcm_writei() the calling thread sleeps until the
 * audio it has written so far would have been played (a per-thread clock, one player per
 * thread), so the player costs what it costs with a real device, minus the device itself.
 *
 * Build: cc -O2 -shared -fPIC -o alsa_pace.so alsa_pace.c -ldl -lasound
 */
#define _GNU_SOURCE
#include <alsa/asoundlib.h>
#include <dlfcn.h>
#include <time.h>

typedef snd_pcm_sframes_t (*writei_fn)(snd_pcm_t *, const void *, snd_pcm_uframes_t);

static __thread snd_pcm_t *paced_pcm;
static __thread unsigned paced_rate;
static __thread struct timespec due;

static void add_ns(struct timespec *t, long long ns)
{
	ns += t->tv_nsec;
	t->tv_sec += ns / 1000000000LL;
	t->tv_nsec = ns % 1000000000LL;
}

static long long ns_between(const struct timespec *a, const struct timespec *b)
{
	return (b->tv_sec - a->tv_sec) * 1000000000LL + (b->tv_nsec - a->tv_nsec);
}

snd_pcm_sframes_t snd_pcm_writei(snd_pcm_t *pcm, const void *buffer, snd_pcm_uframes_t size)
{
	static writei_fn real;
	if (!real)
		real = (writei_fn)dlsym(RTLD_NEXT, "snd_pcm_writei");
	snd_pcm_sframes_t n = real(pcm, buffer, size);
	if (n <= 0)
		return n;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (pcm != paced_pcm) {
		snd_pcm_hw_params_t *params;
		unsigned rate = 0;
		int dir = 0;
		snd_pcm_hw_params_alloca(&params);
		if (snd_pcm_hw_params_current(pcm, params) == 0)
			snd_pcm_hw_params_get_rate(params, &rate, &dir);
		paced_pcm = pcm;
		paced_rate = rate ? rate : 8000;
		due = now;
	}
	/* Fell behind by more than 100 ms (a stall): start counting afresh, as an xrun would. */
	if (ns_between(&due, &now) > 100000000LL)
		due = now;
	add_ns(&due, (long long)n * 1000000000LL / paced_rate);
	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
	return n;
}
