/*
 * Connects to IPV4 PORT from inside a sandbox, the way a hostile program would look for a
 * host-only service. Prints one line: "connected", "failed ERRNO" or "timeout" (nonblocking
 * connect(2), then poll(2) for at most SECONDS, default 3: an address that drops SYNs would
 * otherwise hold the probe for minutes). Exit status 0 when connected, 1 otherwise.
 *
 * Usage: tcp-connect IPV4 PORT [SECONDS]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *errno_name(int e) {
    switch (e) {
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENETUNREACH: return "ENETUNREACH";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    default: return "other";
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: tcp-connect IPV4 PORT [SECONDS]\n");
        return 2;
    }
    int seconds = argc > 3 ? atoi(argv[3]) : 3;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &address.sin_addr) != 1) {
        fprintf(stderr, "tcp-connect: not an IPv4 address: %s\n", argv[1]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        printf("failed %s (socket)\n", errno_name(errno));
        return 1;
    }
    if (connect(fd, (struct sockaddr *)&address, sizeof address) == 0) {
        printf("connected\n");
        return 0;
    }
    if (errno != EINPROGRESS) {
        printf("failed %s\n", errno_name(errno));
        return 1;
    }
    struct pollfd waiting = {.fd = fd, .events = POLLOUT};
    if (poll(&waiting, 1, seconds * 1000) <= 0) {
        printf("timeout\n");
        return 1;
    }
    int error = 0;
    socklen_t length = sizeof error;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
    if (error == 0) {
        printf("connected\n");
        return 0;
    }
    printf("failed %s\n", errno_name(error));
    return 1;
}
