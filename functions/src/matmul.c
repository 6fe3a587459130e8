/* matmul: dense n x n double matrix multiply (`?n=`, default 64); floating-point and cache. */
#include "wagi.h"

int main(void) {
    int n = (int)wagi_query_long("n", 64, 1, 1024);
    double *a = malloc(sizeof(double) * n * n);
    double *b = malloc(sizeof(double) * n * n);
    double *c = calloc((size_t)n * n, sizeof(double));
    if (a == NULL || b == NULL || c == NULL) {
        fputs("matmul: out of memory\n", stderr);
        return 1;
    }
    /* Small integers keep every sum exact, so the result is checkable. */
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) {
            a[i * n + j] = (double)((i + 2 * j) % 7 - 3);
            b[i * n + j] = (double)((3 * i + j) % 5 - 2);
        }
    }
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < n; k++) {
            double aik = a[i * n + k];
            for (int j = 0; j < n; j++) {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    double sum = 0, trace = 0;
    for (int i = 0; i < n; i++) {
        trace += c[i * n + i];
        for (int j = 0; j < n; j++) {
            sum += c[i * n + j];
        }
    }
    printf("Content-Type: application/json\n\n{\"n\": %d, \"sum\": %.0f, \"trace\": %.0f}\n", n, sum,
           trace);
    return 0;
}
