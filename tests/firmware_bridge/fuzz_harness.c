/* Feeds stdin to the bridge core in random-sized chunks with time and encoder ticks.
 * Built with -fsanitize=address,undefined by test_codec.py. */
#include <stdio.h>
#include <stdlib.h>

#include "bridge_core.h"

static unsigned long frames_out, actuations;

static void tx(void *ctx, const uint8_t *buf, uint16_t len) {
    (void)ctx;
    if (len == 0 || buf[len - 1] != 0) abort();
    frames_out++;
}
static void outs(void *ctx, uint8_t r, uint8_t a) { (void)ctx; (void)r; (void)a; }
static void act(void *ctx, uint32_t part) { (void)ctx; (void)part; actuations++; }

int main(void) {
    static uint8_t buf[1 << 22];
    size_t n = fread(buf, 1, sizeof buf, stdin), i = 0;
    bridge_t b;
    bridge_config_t cfg = {200, 20, 1};
    bridge_io_t io = {tx, outs, act, NULL};
    uint32_t now = 0xFFFFF000u; /* cross the uint32 wrap during the run */
    unsigned seed = 1;
    bridge_init(&b, &cfg, &io, 0x1234, now);
    while (i < n) {
        size_t k = 1 + (seed = seed * 1103515245u + 12345u) % 48;
        if (k > n - i) k = n - i;
        bridge_rx(&b, buf + i, k, now);
        i += k;
        now += (seed >> 16) % 40;
        bridge_tick(&b, now);
        if ((seed >> 8) % 5 == 0) bridge_encoder_tick(&b, now);
    }
    printf("frames_out=%lu actuations=%lu\n", frames_out, actuations);
    return 0;
}
