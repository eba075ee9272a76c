import CCowMem
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Who serves the page faults of this process's regions.
///
/// Pages of a clone are filled on demand: when code touches a page that is not there yet,
/// the kernel stops the faulting thread and a *fault server* thread provides the page. In a
/// Swift program that server is a thread the overlay owns, started once, just before the
/// first region is created. It is a POSIX thread, not a task, so that faulting tasks can
/// never starve it of a thread to run on.
///
/// ```swift
/// print(FaultServer.current)   // "overlay thread"
/// ```
public struct FaultServer: Hashable, Sendable {
    private enum Kind: Hashable, Sendable {
        case overlayThread
        case libraryThread
        case unavailable
    }

    private let kind: Kind

    /// Faults are served by the thread the Swift overlay started (the usual case).
    public static var overlayThread: FaultServer { FaultServer(kind: .overlayThread) }

    /// Faults are served by the C library's own thread: something in the process had
    /// already made the library start it before the overlay could claim the job.
    public static var libraryThread: FaultServer { FaultServer(kind: .libraryThread) }

    /// No thread serves faults: the C library could not set up its fault mechanism
    /// (`userfaultfd` forbidden, for instance). Regions then work the way the C library
    /// falls back to, or cannot be created; creating one says why.
    public static var unavailable: FaultServer { FaultServer(kind: .unavailable) }

    /// Who serves faults in this process. Reading it starts the overlay's server thread if
    /// no region has been created yet.
    ///
    /// The C function that decides is `cowmem_server_claim`.
    public static var current: FaultServer { faultServer.server }
}

extension FaultServer: CustomStringConvertible {
    public var description: String {
        switch kind {
        case .overlayThread: "overlay thread"
        case .libraryThread: "library thread"
        case .unavailable: "none"
        }
    }
}

/// The process's fault server, started on first use. Swift initialises a global lazily and
/// exactly once, whichever thread gets there first.
internal let faultServer = FaultServerThread.start()

/// How many times the overlay's server thread has woken to hand waiting faults to the
/// library. Counted *before* the library resolves them (and wakes the faulting threads), so
/// a thread that has had a fault served sees the count that includes it.
internal let faultServerWakeups = Atomic<Int>(0)

/// The overlay's side of fault serving: the claim, and the thread that waits on the
/// descriptor. The thread only calls the C library; it never touches region memory, since a
/// fault on the one thread that resolves faults could never be resolved.
internal final class FaultServerThread: Sendable {
    let server: FaultServer

    /// Why `cowmem_server_claim` declined (`EBUSY`: the library's thread serves).
    let claimError: Errno?

    /// Set when the claim succeeded but the thread could not be started: the library then
    /// waits for a server that does not exist, so no region may be created.
    let startError: Errno?

    // Owned for the life of the process: the loop never ends, so nobody joins it.
    private let thread: OwnedThread?

    private init(server: FaultServer, claimError: Errno? = nil, startError: Errno? = nil,
                 thread: OwnedThread? = nil) {
        self.server = server
        self.claimError = claimError
        self.startError = startError
        self.thread = thread
    }

    static func start() -> FaultServerThread {
        let descriptor: CInt
        switch Engine.claimFaultServer() {
        case .success(let claimed):
            descriptor = claimed
        case .failure(let error):
            let errno = error.underlyingError ?? .ioError
            return FaultServerThread(
                server: errno == .resourceBusy ? .libraryThread : .unavailable, claimError: errno)
        }
        do {
            // No application signal handler may run here: one that touched region memory
            // would fault on the only thread that could resolve the fault. The crash
            // backtracer's suspend signal and the thread's own fault signals stay open.
            let thread = try OwnedThread(name: "cowmem-faults", blockingSignals: true) {
                serveFaults(on: descriptor)
            }
            return FaultServerThread(server: .overlayThread, thread: thread)
        } catch {
            return FaultServerThread(server: .unavailable, startError: error)
        }
    }

    /// Throws if regions cannot be used from Swift because the claimed server never started.
    func checkUsable() throws(CowMemError) {
        if let startError {
            throw CowMemError(
                code: .faultServerUnavailable, underlyingError: startError,
                function: "pthread_create")
        }
    }

    /// Waits for fault messages and hands them to the library, forever.
    private static func serveFaults(on descriptor: CInt) {
        var lastReported: Errno? = nil
        while true {
            var request = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            if poll(&request, 1, -1) < 0 {
                let error = Errno(rawValue: errno)
                switch error {
                case .interrupted, .noMemory, .resourceTemporarilyUnavailable:
                    continue
                default:
                    fatalError("CowMem's fault server: poll failed with \(error)")
                }
            }
            if request.revents & Int16(POLLNVAL) != 0 {
                fatalError("CowMem's fault server: the fault descriptor was closed")
            }
            faultServerWakeups.add(1, ordering: .releasing)
            switch Engine.handleFaults() {
            case .success:
                lastReported = nil
            case .failure(let failure)
                where failure.underlyingError == .interrupted || failure.underlyingError == .resourceTemporarilyUnavailable:
                continue
            case .failure(let failure):
                // The library has already failed the faulting thread (SIGBUS or an error);
                // say so once per run of failures, and keep serving the others.
                let error = failure.underlyingError
                if error != lastReported {
                    lastReported = error
                    let message = "cowmem: fault server: \(failure)\n"
                    _ = Array(message.utf8).withUnsafeBytes {
                        write(STDERR_FILENO, $0.baseAddress, $0.count)
                    }
                }
            }
        }
    }
}
