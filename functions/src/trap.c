/*
 * trap: fails on purpose. `?kind=` picks how: unreachable (default), divzero, oob (memory access
 * out of bounds), stack (unbounded recursion) or exit (exit status 3 after writing some output).
 */
#include "wagi.h"

static volatile int zero = 0;
static volatile int hundred = 100;

static int recurse(volatile int depth) {
    volatile char pad[256];
    pad[depth % 256] = (char)depth;
    return recurse(depth + 1) + pad[0];
}

int main(void) {
    char buffer[32];
    const char *kind = wagi_query_str("kind", "unreachable", buffer, sizeof buffer);
    if (strcmp(kind, "divzero") == 0) {
        /* Both operands unknown to the compiler, so this is a real i32.div_s. */
        printf("%d\n", hundred / zero);
    } else if (strcmp(kind, "oob") == 0) {
        volatile int *far = (volatile int *)(unsigned long)0xFFFFFFF0u;
        printf("%d\n", *far);
    } else if (strcmp(kind, "stack") == 0) {
        printf("%d\n", recurse(0));
    } else if (strcmp(kind, "exit") == 0) {
        fputs("Content-Type: text/plain\n\nabout to fail\n", stdout);
        fflush(stdout);
        exit(3);
    }
    __builtin_trap();
}
