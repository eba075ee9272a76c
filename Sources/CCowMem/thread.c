/*
 * The library's own threads (the fault server, the fence's drainer, the
 * copier's helper, the janitor) start here, with the signal mask they all
 * need.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>

#include "internal.h"

int cowmem__engine_start_thread(void *(*fn)(void *), void *arg, pthread_t *joinable)
{
	pthread_attr_t attr;
	sigset_t mask, old;
	pthread_t thread;

	/* Signals go to the application's threads, never to ours, except two
	 * kinds. SIGPROF: Swift's crash backtracer suspends every thread with
	 * the first of SIGUSR1, SIGUSR2, SIGPROF that it does not block (and
	 * prints "failed to suspend thread" otherwise); USR1 and USR2 are the
	 * application's, whose handlers may touch region memory, while a
	 * SIGPROF handler is a profiler's sampler. And the signals of a fault
	 * in the thread itself: with them blocked the kernel kills the process
	 * without running the crash handler. The Swift overlay's fault server
	 * uses the same set (OwnedThread.serviceThreadSignalMask). */
	static const int open_signals[] = {
		SIGPROF, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS,
	};
	sigfillset(&mask);
	for (size_t i = 0; i < sizeof open_signals / sizeof open_signals[0]; i++)
		sigdelset(&mask, open_signals[i]);
	pthread_sigmask(SIG_SETMASK, &mask, &old);
	pthread_attr_init(&attr);
	if (!joinable)
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	int rc = pthread_create(joinable ? joinable : &thread, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -rc;
}
