/* flood: writes `?mib=` MiB of output (default 1024) and exits 1 when a write fails. */
#include "wagi.h"

static char block[64 * 1024];

int main(void) {
    long mib = wagi_query_long("mib", 1024, 0, 1 << 20);
    memset(block, 'x', sizeof block);
    fputs("Content-Type: text/plain\n\n", stdout);
    for (long i = 0; i < mib * 16; i++) {
        if (fwrite(block, 1, sizeof block, stdout) != sizeof block) {
            fprintf(stderr, "flood: write failed after %ld KiB\n", i * 64);
            return 1;
        }
    }
    return 0;
}
