/* hello: the smallest useful function; the baseline for per-request overhead. */
#include <stdio.h>

int main(void) {
    fputs("Content-Type: text/plain\n\nHello, world!\n", stdout);
    return 0;
}
