/*
 * bulk: a 20 MiB module, for pulling, caching and loading large modules. Nearly all of
 * it is one data segment: 20 MiB of deterministic pseudo-random bytes the build
 * generates (SHAKE-256 of a fixed seed, so nothing compresses it), embedded with C23's
 * #embed. `?offset=` returns 16 bytes of it in hex, so a test can see the segment came
 * through intact; without it, the first and last 16.
 */
#include "wagi.h"

static const unsigned char payload[] = {
#embed "bulk.bin"
};

static void hex16(const unsigned char *p) {
    for (int i = 0; i < 16; i++) {
        printf("%02x", p[i]);
    }
}

int main(void) {
    long size = (long)sizeof(payload);
    long offset = wagi_query_long("offset", -1, 0, size - 16);
    printf("Content-Type: application/json\n\n{\"bytes\": %ld, ", size);
    if (offset >= 0) {
        printf("\"offset\": %ld, \"hex\": \"", offset);
        hex16(payload + offset);
        printf("\"}\n");
        return 0;
    }
    printf("\"head\": \"");
    hex16(payload);
    printf("\", \"tail\": \"");
    hex16(payload + size - 16);
    printf("\"}\n");
    return 0;
}
