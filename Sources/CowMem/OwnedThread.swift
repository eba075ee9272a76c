import Dispatch
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A POSIX thread that runs one closure, owned by whoever created it.
///
/// Work that blocks (waiting on a descriptor, or on a page fault) belongs on a thread of its
/// own, not on a Swift concurrency task: the cooperative pool may be as narrow as the number
/// of CPUs, and tasks that block it can starve the very work they wait for.
internal final class OwnedThread: @unchecked Sendable {
    // Written once by `init`, read by `join`; `join` is called at most once, by the owner.
    private var thread: pthread_t
    private var joined = false

    /// Starts a thread named `name` (at most 15 bytes show up in `/proc`) that runs `body`.
    /// Returns once the thread runs and carries its name.
    ///
    /// With `blockingSignals`, the thread starts with every signal blocked that the
    /// application may send or handle (see ``serviceThreadSignalMask()``), so that the
    /// application's signal handlers run on its own threads, never on this one.
    init(name: String, blockingSignals: Bool = false, _ body: @escaping @Sendable () -> Void) throws(Errno) {
        let startInfo = Start(name: name, body: body)
        let start = Unmanaged.passRetained(startInfo)
        var thread = pthread_t()
        // A new thread inherits its creator's signal mask: set it around the creation.
        var mask = OwnedThread.serviceThreadSignalMask(), previous = sigset_t()
        if blockingSignals {
            pthread_sigmask(SIG_SETMASK, &mask, &previous)
        }
        defer {
            if blockingSignals { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        }
        let result = pthread_create(&thread, nil, { context in
            let start = Unmanaged<Start>.fromOpaque(context!).takeRetainedValue()
            OwnedThread.nameCurrentThread(start.name)
            start.running.signal()
            start.body()
            return nil
        }, start.toOpaque())
        guard result == 0 else {
            start.release()
            throw Errno(rawValue: result)
        }
        self.thread = thread
        startInfo.running.wait()
    }

    /// Waits for the thread to finish. Call it at most once.
    func join() {
        precondition(!joined, "OwnedThread.join() called twice")
        joined = true
        let result = pthread_join(thread, nil)
        precondition(result == 0, "pthread_join failed with \(Errno(rawValue: result))")
    }

    deinit {
        // A thread nobody joins releases its resources itself when it ends.
        if !joined { pthread_detach(thread) }
    }

    /// The signal mask of a thread that serves the library (the fault server): every signal
    /// blocked except those that must reach it. The C library's threads use the same set
    /// (`cowmem__engine_start_thread` in `thread.c`).
    ///
    /// - `SIGPROF` stays open so that Swift's crash backtracer can suspend the thread while
    ///   it prints a backtrace: on Linux it suspends each thread with the first of
    ///   `SIGUSR1`, `SIGUSR2` and `SIGPROF` that the thread does not block, and prints
    ///   `failed to suspend thread N while processing a crash` when all three are blocked.
    ///   `SIGUSR1` and `SIGUSR2` are the application's to handle, where a handler may touch
    ///   region memory; a `SIGPROF` handler is a profiler's sampler, which reads the stack.
    /// - The signals of a fault in the thread itself (`SIGSEGV`, `SIGBUS`, `SIGILL`,
    ///   `SIGFPE`, `SIGTRAP`, `SIGSYS`) stay open so that a crash of this thread is reported
    ///   by the crash handler: the kernel kills a thread that faults with the signal blocked
    ///   without running any handler. The thread never touches region memory, so only its
    ///   own bugs raise them here.
    static func serviceThreadSignalMask() -> sigset_t {
        var mask = sigset_t()
        sigfillset(&mask)
        for signal in [SIGPROF, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS] {
            sigdelset(&mask, signal)
        }
        return mask
    }

    /// Names the calling thread, for `top -H`, `gdb` and `/proc/<pid>/task/*/comm`.
    /// Glibc's `pthread_setname_np` is GNU-only and not visible to Swift; the kernel takes the
    /// same name through `/proc/thread-self/comm`. Best effort: a thread works without a name.
    private static func nameCurrentThread(_ name: String) {
        let descriptor = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        let bytes = Array(name.utf8.prefix(15))
        _ = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        close(descriptor)
    }

    private final class Start: Sendable {
        let name: String
        let body: @Sendable () -> Void
        let running = DispatchSemaphore(value: 0)

        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }
}
