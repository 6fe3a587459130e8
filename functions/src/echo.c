/* echo: returns the request body and reports what the runtime passed in (CGI variables). */
#include "wagi.h"

int main(void) {
    size_t len = 0;
    char *body = wagi_read_body(&len);
    printf("Content-Type: %s\n", wagi_env("CONTENT_TYPE", "application/octet-stream"));
    printf("X-Echo-Method: %s\n", wagi_env("REQUEST_METHOD", ""));
    printf("X-Echo-Path: %s\n", wagi_env("PATH_INFO", ""));
    printf("X-Echo-Query: %s\n", wagi_env("QUERY_STRING", ""));
    printf("X-Echo-Length: %zu\n\n", len);
    fwrite(body, 1, len, stdout);
    free(body);
    return 0;
}
