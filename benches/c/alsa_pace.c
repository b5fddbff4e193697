/*
 * LD_PRELOAD shim for scripts/bench-sip-load.sh: makes ALSA's "null" device keep real time.
 *
 * baresip plays and captures every call through its own player and source; the cheapest it has
 * are ALSA's "null" device (silence in, samples discarded), but that device is unpaced: reads
 * and writes return at once, so baresip's audio threads spin (147 % CPU for 10 calls). A sound
 * card blocks the caller until a period has been played or captured; this shim does the same:
 * after each snd_pcm_writei() / snd_pcm_readi() the calling thread sleeps until the audio it
 * has moved so far would have been played or captured (a per-thread clock; baresip runs one
 * thread per player and per source), so baresip's audio costs what it costs with a real
 * device, minus the device itself. It never speeds anything up.
 *
 * Build: cc -O2 -shared -fPIC -o alsa_pace.so alsa_pace.c -ldl -lasound
 */
#define _GNU_SOURCE
#include <alsa/asoundlib.h>
#include <dlfcn.h>
#include <time.h>

typedef snd_pcm_sframes_t (*writei_fn)(snd_pcm_t *, const void *, snd_pcm_uframes_t);
typedef snd_pcm_sframes_t (*readi_fn)(snd_pcm_t *, void *, snd_pcm_uframes_t);

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

/* Sleeps until the `n` frames just moved on `pcm` are due, on this thread's clock. */
static void pace(snd_pcm_t *pcm, snd_pcm_sframes_t n)
{
	if (n <= 0)
		return;
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
}

snd_pcm_sframes_t snd_pcm_writei(snd_pcm_t *pcm, const void *buffer, snd_pcm_uframes_t size)
{
	static writei_fn real;
	if (!real)
		real = (writei_fn)dlsym(RTLD_NEXT, "snd_pcm_writei");
	snd_pcm_sframes_t n = real(pcm, buffer, size);
	pace(pcm, n);
	return n;
}

snd_pcm_sframes_t snd_pcm_readi(snd_pcm_t *pcm, void *buffer, snd_pcm_uframes_t size)
{
	static readi_fn real;
	if (!real)
		real = (readi_fn)dlsym(RTLD_NEXT, "snd_pcm_readi");
	snd_pcm_sframes_t n = real(pcm, buffer, size);
	pace(pcm, n);
	return n;
}
