/*
 * Reference side of earshot's G.711 checks: spandsp's inline G.711 routines.
 *
 *   spandsp_g711 dump          every encode (65536 inputs) and decode (256 codes), both laws
 *   spandsp_g711 bench FILE    times spandsp over FILE (raw little-endian i16 samples);
 *                              reads "OP LEN ITERS" lines on stdin, answers elapsed ns per line
 *                              (OP: ulaw_encode ulaw_decode alaw_encode alaw_decode)
 *
 * Built at test/bench time with `cc -O2 ... -lspandsp` by tests/c/spandsp_shim.rs.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <spandsp.h>

static int dump(void)
{
    for (int s = -32768; s <= 32767; s++)
        printf("U %d %d\n", s, linear_to_ulaw(s));
    for (int s = -32768; s <= 32767; s++)
        printf("A %d %d\n", s, linear_to_alaw(s));
    for (int c = 0; c < 256; c++)
        printf("u %d %d\n", c, ulaw_to_linear((uint8_t) c));
    for (int c = 0; c < 256; c++)
        printf("a %d %d\n", c, alaw_to_linear((uint8_t) c));
    return 0;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* Keeps the compiler from dropping or merging repeated passes over the same buffers. */
#define BARRIER() __asm__ __volatile__("" ::: "memory")

static int bench(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return 2;
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    size_t n = (size_t) bytes / 2;
    int16_t *pcm = malloc(n * sizeof *pcm);
    int16_t *pcm_out = malloc(n * sizeof *pcm_out);
    uint8_t *ucodes = malloc(n);
    uint8_t *acodes = malloc(n);
    uint8_t *codes_out = malloc(n);
    if (!pcm || !pcm_out || !ucodes || !acodes || !codes_out || fread(pcm, 2, n, f) != n)
        return 2;
    fclose(f);
    for (size_t i = 0; i < n; i++) {
        ucodes[i] = linear_to_ulaw(pcm[i]);
        acodes[i] = linear_to_alaw(pcm[i]);
    }
    char op[32];
    size_t len;
    uint64_t iters;
    while (scanf("%31s %zu %" SCNu64, op, &len, &iters) == 3) {
        if (len > n)
            len = n;
        uint64_t start = now_ns();
        if (strcmp(op, "ulaw_encode") == 0) {
            for (uint64_t k = 0; k < iters; k++) {
                for (size_t i = 0; i < len; i++)
                    codes_out[i] = linear_to_ulaw(pcm[i]);
                BARRIER();
            }
        } else if (strcmp(op, "alaw_encode") == 0) {
            for (uint64_t k = 0; k < iters; k++) {
                for (size_t i = 0; i < len; i++)
                    codes_out[i] = linear_to_alaw(pcm[i]);
                BARRIER();
            }
        } else if (strcmp(op, "ulaw_decode") == 0) {
            for (uint64_t k = 0; k < iters; k++) {
                for (size_t i = 0; i < len; i++)
                    pcm_out[i] = ulaw_to_linear(ucodes[i]);
                BARRIER();
            }
        } else if (strcmp(op, "alaw_decode") == 0) {
            for (uint64_t k = 0; k < iters; k++) {
                for (size_t i = 0; i < len; i++)
                    pcm_out[i] = alaw_to_linear(acodes[i]);
                BARRIER();
            }
        } else {
            return 3;
        }
        printf("%" PRIu64 "\n", now_ns() - start);
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "dump") == 0)
        return dump();
    if (argc >= 3 && strcmp(argv[1], "bench") == 0)
        return bench(argv[2]);
    fprintf(stderr, "usage: %s dump | bench FILE\n", argv[0]);
    return 1;
}
