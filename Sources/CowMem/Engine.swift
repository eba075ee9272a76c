import CCowMem
import SystemPackage
#if DEBUG
import Synchronization
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The one place where the overlay calls the C engine.
///
/// Each function wraps one C call and returns its outcome as a `Result`. The wrappers are
/// shaped by what the C function returns, and three choke points turn a failure into a
/// ``CowMemError``: ``pointer(_:callerDescriptor:_:)`` (a pointer, `NULL` on failure),
/// ``status(_:callerDescriptor:_:)`` (0, or -1 on failure) and ``count(_:_:)`` (a count, -1
/// on failure). Each of them retries `EINTR` where the call can be made again, classifies
/// `errno` with the one table (``CowMemError/Code/init(_:from:)``), and traps on values
/// that can only mean a bug in CowMem itself (``CFunction/isOwnBug(_:)``). In debug builds
/// they consult ``EngineMocking`` first, so that tests can force any `errno` from any call.
internal enum Engine {
    /// `cowmem_create`.
    static func create(size: Int) -> Result<OpaquePointer, CowMemError> {
        pointer(.create) { cowmem_create(size_t(size)) }
    }

    /// `cowmem_clone`.
    static func clone(_ region: OpaquePointer) -> Result<OpaquePointer, CowMemError> {
        pointer(.clone) { cowmem_clone(region) }
    }

    /// `cowmem_destroy`. On failure the region stays valid.
    static func destroy(_ region: OpaquePointer) -> Result<Void, CowMemError> {
        status(.destroy) { cowmem_destroy(region) }
    }

    /// `cowmem_data`: cannot fail for a live region.
    static func data(_ region: OpaquePointer) -> UnsafeMutableRawPointer {
        guard let data = cowmem_data(region) else {
            fatalError("cowmem_data returned NULL for a live region: a bug in CowMem")
        }
        return data
    }

    /// `cowmem_size`: cannot fail for a live region.
    static func size(_ region: OpaquePointer) -> Int {
        let size = cowmem_size(region)
        precondition(size > 0, "cowmem_size returned 0 for a live region: a bug in CowMem")
        return Int(size)
    }

    /// `cowmem_prefault`.
    static func prefault(
        _ region: OpaquePointer, offset: Int, count: Int, forWriting: Bool
    ) -> Result<Void, CowMemError> {
        status(.prefault) { cowmem_prefault(region, size_t(offset), size_t(count), forWriting ? 1 : 0) }
    }

    /// `cowmem_dirty_pages`: the indices of the pages that may differ from the region's
    /// origin, in ascending order.
    static func dirtyPages(_ region: OpaquePointer) -> Result<[Int], CowMemError> {
        // Most lists are short: one call with room for 256 pages, a second one sized by the
        // count the first returned otherwise (again if another thread wrote meanwhile).
        var capacity = 256
        while true {
            var outcome: Result<Int, CowMemError> = .success(0)
            let pages = [Int](unsafeUninitializedCapacity: capacity) { buffer, initialized in
                outcome = count(.dirtyPages) { cowmem_dirty_pages(region, buffer.baseAddress, capacity) }
                initialized = min((try? outcome.get()) ?? 0, capacity)
            }
            switch outcome {
            case .failure(let error): return .failure(error)
            case .success(let total) where total <= capacity: return .success(pages)
            case .success(let total): capacity = total
            }
        }
    }

    /// `cowmem_reset`. On failure every byte reads as its value before or its origin value.
    static func reset(_ region: OpaquePointer) -> Result<Void, CowMemError> {
        status(.reset) { cowmem_reset(region) }
    }

    /// `cowmem_copy`. On failure neither region changed.
    static func copy(into destination: OpaquePointer, from source: OpaquePointer) -> Result<Void, CowMemError> {
        status(.copy) { cowmem_copy(destination, source) }
    }

    /// `cowmem_save`. `descriptor` is the caller's: `EBADF` is their mistake, not ours.
    static func save(_ region: OpaquePointer, to descriptor: CInt) -> Result<Void, CowMemError> {
        // The snapshot is written from offset 0 and the length set at the end, so a call
        // interrupted part-way is simply made again.
        status(.save) { cowmem_save(region, descriptor) }
    }

    /// `cowmem_load`. `descriptor` is the caller's: `EBADF` is their mistake, not ours.
    static func load(from descriptor: CInt) -> Result<OpaquePointer, CowMemError> {
        pointer(.load) { cowmem_load(descriptor) }
    }

    /// `cowmem_stats`.
    static func statistics(_ region: OpaquePointer) -> Result<cowmem_stats, CowMemError> {
        var statistics = cowmem_stats()
        return status(.statistics) { cowmem_stats(region, &statistics) }.map { statistics }
    }

    /// `cowmem_backend`: the fault mechanism's name.
    static func backendName() -> Result<String, CowMemError> {
        pointer(.backend) { cowmem_backend() }.map { String(cString: $0) }
    }

    /// `cowmem_features`: the optional features in effect, comma-separated.
    static func features() -> Result<String, CowMemError> {
        pointer(.features) { cowmem_features() }.map { String(cString: $0) }
    }

    /// `cowmem_page_size`.
    static var pageSize: Int { Int(cowmem_page_size()) }

    /// `cowmem_server_claim`: the descriptor to poll, or `EBUSY` if another server runs.
    static func claimFaultServer() -> Result<CInt, CowMemError> {
        count(.claimFaultServer) { Int(cowmem_server_claim()) }.map { CInt($0) }
    }

    /// `cowmem_server_handle`: how many fault messages it resolved. Not retried: the server
    /// loop polls again after `EINTR`.
    static func handleFaults() -> Result<Int, CowMemError> {
        count(.handleFaults, retryingInterrupts: false) { Int(cowmem_server_handle()) }
    }

    // MARK: The choke points

    /// A C call that returns a pointer, `NULL` with `errno` set on failure. Retried on `EINTR`.
    private static func pointer<Pointer>(
        _ function: CFunction, _ body: () -> Pointer?
    ) -> Result<Pointer, CowMemError> {
        while true {
            if let forced = EngineMocking.forcedFailure(of: function) {
                if forced == .interrupted { continue }
                return .failure(failure(forced, in: function))
            }
            if let result = body() { return .success(result) }
            let error = Errno(rawValue: errno)
            if error != .interrupted { return .failure(failure(error, in: function)) }
        }
    }

    /// A C call that returns 0, or -1 with `errno` set on failure. Retried on `EINTR`.
    private static func status(
        _ function: CFunction, _ body: () -> CInt
    ) -> Result<Void, CowMemError> {
        while true {
            if let forced = EngineMocking.forcedFailure(of: function) {
                if forced == .interrupted { continue }
                return .failure(failure(forced, in: function))
            }
            if body() == 0 { return .success(()) }
            let error = Errno(rawValue: errno)
            if error != .interrupted { return .failure(failure(error, in: function)) }
        }
    }

    /// A C call that returns a count (or a descriptor), or -1 with `errno` set on failure.
    private static func count(
        _ function: CFunction, retryingInterrupts: Bool = true, _ body: () -> Int
    ) -> Result<Int, CowMemError> {
        while true {
            if let forced = EngineMocking.forcedFailure(of: function) {
                if forced == .interrupted && retryingInterrupts { continue }
                return .failure(failure(forced, in: function))
            }
            let result = body()
            if result >= 0 { return .success(result) }
            let error = Errno(rawValue: errno)
            if error != .interrupted || !retryingInterrupts { return .failure(failure(error, in: function)) }
        }
    }

    /// The error for `errno` from `function`, after trapping on values that can only be our
    /// own bug. Read `errno` before calling: anything may change it.
    private static func failure(_ errno: Errno, in function: CFunction) -> CowMemError {
        if function.isOwnBug(errno) {
            fatalError("\(function.rawValue) failed with \(errno): a bug in CowMem")
        }
        return CowMemError(errno, from: function)
    }
}

/// The C library's functions that can fail, with what their failures mean.
internal enum CFunction: String, Sendable, CaseIterable {
    case create = "cowmem_create"
    case clone = "cowmem_clone"
    case destroy = "cowmem_destroy"
    case prefault = "cowmem_prefault"
    case dirtyPages = "cowmem_dirty_pages"
    case reset = "cowmem_reset"
    case copy = "cowmem_copy"
    case save = "cowmem_save"
    case load = "cowmem_load"
    case statistics = "cowmem_stats"
    case backend = "cowmem_backend"
    case features = "cowmem_features"
    case claimFaultServer = "cowmem_server_claim"
    case handleFaults = "cowmem_server_handle"

    /// Whether the function is given a descriptor of the caller's, which makes `EBADF` the
    /// caller's mistake rather than a bug of ours.
    var takesCallerDescriptor: Bool {
        self == .save || self == .load
    }

    /// Whether `errno` from this function can only mean a bug in CowMem: a bad address, or
    /// a bad descriptor when every descriptor involved is the library's own.
    func isOwnBug(_ errno: Errno) -> Bool {
        switch errno {
        case .badAddress: true
        case .badFileDescriptor: !takesCallerDescriptor
        default: false
        }
    }
}

/// Forces failures of the wrapped C calls, for tests: the calls it names fail with the
/// `errno` values it gives, in order, without calling the C library, on the task (or
/// thread) that set it. In the style of swift-system's `Internals/Mocking.swift`.
///
/// It exists only in debug builds, the ones `swift test` makes; a release build has no
/// mocking and no check for it.
#if DEBUG
internal final class EngineMocking: Sendable {
    /// The failures to force on the current task or thread.
    @TaskLocal static var current: EngineMocking?

    private let function: CFunction?
    private let failures: [Errno]
    private let calls = Mutex<Int>(0)

    /// The `vm.max_map_count` that classifying an `ENOMEM` compares the mappings with, in
    /// place of the system's.
    let mappingLimit: Int?

    /// Fails the next calls of `function` (of any wrapped function, when `nil`) with
    /// `failures`, one each, then lets them through.
    init(_ function: CFunction?, failingWith failures: [Errno], mappingLimit: Int? = nil) {
        self.function = function
        self.failures = failures
        self.mappingLimit = mappingLimit
    }

    /// How many calls of the function were failed so far.
    var forcedCount: Int { calls.withLock { min($0, failures.count) } }

    /// Runs `body` with the next calls of `function` failing with `failures`.
    static func forcing<T, E: Error>(
        _ failures: [Errno], in function: CFunction? = nil, mappingLimit: Int? = nil,
        _ body: () throws(E) -> T
    ) throws(E) -> T {
        let mocking = EngineMocking(function, failingWith: failures, mappingLimit: mappingLimit)
        // `withValue` rethrows untyped errors: carry the typed one out in a `Result`.
        return try $current.withValue(mocking) { Result { () throws(E) -> T in try body() } }.get()
    }

    /// The `errno` to fail this call of `function` with, if any.
    static func forcedFailure(of function: CFunction) -> Errno? {
        guard let mocking = current, mocking.function == nil || mocking.function == function else {
            return nil
        }
        return mocking.calls.withLock { calls -> Errno? in
            guard calls < mocking.failures.count else { return nil }
            calls += 1
            return mocking.failures[calls - 1]
        }
    }
}
#else
internal enum EngineMocking {
    @inline(__always)
    static func forcedFailure(of function: CFunction) -> Errno? { nil }
}
#endif
