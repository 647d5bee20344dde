/* echo-server ADDR PORT: a TCP echo service for the port tests (busybox nc -ll keeps a listen
 * backlog of 2, which turns 100 simultaneous connects into SYN retries). Listens with a deep
 * backlog, then goes to the background (the parent exits once the socket listens), and serves
 * each connection in a child of its own: everything read is written back, and at EOF the
 * writing half is shut, so a client that half-closes still reads its whole echo. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void serve(int fd) {
    char buffer[65536];
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n <= 0) break;
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(fd, buffer + done, (size_t)(n - done));
            if (w <= 0) _exit(1);
            done += w;
        }
    }
    shutdown(fd, SHUT_WR);
    close(fd);
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: echo-server ADDR PORT\n");
        return 2;
    }
    struct sockaddr_storage storage;
    memset(&storage, 0, sizeof storage);
    socklen_t length;
    int family;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&storage;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&storage;
    if (inet_pton(AF_INET, argv[1], &v4->sin_addr) == 1) {
        family = AF_INET;
        v4->sin_family = AF_INET;
        v4->sin_port = htons((unsigned short)atoi(argv[2]));
        length = sizeof *v4;
    } else if (inet_pton(AF_INET6, argv[1], &v6->sin6_addr) == 1) {
        family = AF_INET6;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((unsigned short)atoi(argv[2]));
        length = sizeof *v6;
    } else {
        fprintf(stderr, "echo-server: %s is not an address\n", argv[1]);
        return 2;
    }
    int listener = socket(family, SOCK_STREAM, 0);
    int on = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (listener < 0 || bind(listener, (struct sockaddr *)&storage, length) < 0 || listen(listener, 1024) < 0) {
        perror("echo-server");
        return 1;
    }
    signal(SIGCHLD, SIG_IGN);   /* children are reaped by the kernel */
    if (fork() != 0) return 0;  /* listening: the caller may go on */
    setsid();
    for (;;) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) continue;
        if (fork() == 0) {
            close(listener);
            serve(fd);
        }
        close(fd);
    }
}
