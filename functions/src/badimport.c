/*
 * badimport: a test fixture that imports a host function no runtime provides
 * (`env::host_socket_connect`), as code written for another host would.
 */
#include <stdio.h>

__attribute__((import_module("env"), import_name("host_socket_connect"))) extern int
host_socket_connect(const char *address);

int main(void) {
    printf("Content-Type: text/plain\n\n%d\n", host_socket_connect("10.0.0.1:80"));
    return 0;
}
