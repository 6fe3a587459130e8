/* grow: a memory bomb; allocates and touches 1 MiB after 1 MiB until allocation fails. */
#include "wagi.h"

/* Chained through a global so the compiler cannot prove the memory unused and drop it. */
static void *volatile head = NULL;

int main(void) {
    for (unsigned long mib = 0;; mib++) {
        unsigned char *chunk = malloc(1024 * 1024);
        if (chunk == NULL) {
            fprintf(stderr, "grow: allocation failed after %lu MiB\n", mib);
            abort();
        }
        memset(chunk, 0xA5, 1024 * 1024);
        *(void **)chunk = head;
        head = chunk;
    }
}
