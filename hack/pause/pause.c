/*
 * pause is the process that holds a pod sandbox's namespaces open.
 *
 * kubox builds it from this file rather than pulling registry.k8s.io/pause,
 * because kubox runs with no registry at all. It behaves like the upstream
 * pause: as PID 1 of the sandbox it reaps zombies that end up reparented to
 * it, and it exits 0 on SIGINT or SIGTERM so that stopping a sandbox is quick.
 * It is linked statically (gcc -static) so that the image needs no libc.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef VERSION
#define VERSION "unknown"
#endif

static void on_stop(int sig) {
	/* Only async-signal-safe calls here. */
	static const char msg[] = "pause: shutting down\n";
	(void)sig;
	(void)!write(STDERR_FILENO, msg, sizeof msg - 1);
	_exit(0);
}

static void on_child(int sig) {
	int saved = errno;
	(void)sig;
	/* One SIGCHLD can stand for several exited children: reap them all. */
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
	errno = saved;
}

static int handle(int sig, void (*fn)(int), int flags) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv) {
	if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
		printf("pause (kubox) %s\n", VERSION);
		return 0;
	}
	if (getpid() != 1) {
		/* Still useful for tests, but nothing reparents to us then. */
		fprintf(stderr, "pause: warning: not running as PID 1\n");
	}
	if (handle(SIGINT, on_stop, 0) < 0 || handle(SIGTERM, on_stop, 0) < 0) {
		perror("pause: sigaction");
		return 1;
	}
	if (handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART) < 0) {
		perror("pause: sigaction SIGCHLD");
		return 2;
	}
	for (;;) {
		pause();
	}
	/* not reached */
	return 42;
}
