/* fib: CPU-bound work whose cost grows exponentially with `?n=` (naive recursion). */
#include "wagi.h"

static unsigned long long fib(int n) {
    return n < 2 ? (unsigned long long)n : fib(n - 1) + fib(n - 2);
}

int main(void) {
    int n = (int)wagi_query_long("n", 25, 0, 45);
    printf("Content-Type: text/plain\n\nfib(%d) = %llu\n", n, fib(n));
    return 0;
}
