/* alloc: allocates `?mib=` MiB in 1 MiB chunks and touches every page (memory pressure). */
#include "wagi.h"

#define CHUNK (1024 * 1024)
#define PAGE 4096

int main(void) {
    long mib = wagi_query_long("mib", 16, 0, 4096);
    unsigned long touched = 0;
    for (long i = 0; i < mib; i++) {
        volatile unsigned char *chunk = malloc(CHUNK);
        if (chunk == NULL) {
            fprintf(stderr, "alloc: out of memory after %ld MiB\n", i);
            abort();
        }
        for (long off = 0; off < CHUNK; off += PAGE) {
            chunk[off] = (unsigned char)(off / PAGE);
            touched++;
        }
    }
    printf("Content-Type: application/json\n\n{\"mib\": %ld, \"pages\": %lu}\n", mib, touched);
    return 0;
}
