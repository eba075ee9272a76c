import CCowMem
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The one place where the overlay calls the C engine.
///
/// Each function is a thin wrapper over one C call: it retries `EINTR` where a call can be
/// interrupted, throws the `errno` of a failure as `Errno`, and traps on `errno` values
/// that can only mean a bug in CowMem itself (a bad descriptor or address of our own).
internal enum Engine {
    /// `cowmem_create`.
    static func create(size: Int) throws(Errno) -> OpaquePointer {
        try retryingInterrupts("cowmem_create") { cowmem_create(size_t(size)) }
    }

    /// `cowmem_clone`.
    static func clone(_ region: OpaquePointer) throws(Errno) -> OpaquePointer {
        try retryingInterrupts("cowmem_clone") { cowmem_clone(region) }
    }

    /// `cowmem_destroy`. On failure the region stays valid.
    static func destroy(_ region: OpaquePointer) throws(Errno) {
        _ = try retryingInterrupts("cowmem_destroy") { () -> OpaquePointer? in
            cowmem_destroy(region) == 0 ? region : nil
        }
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
    static func prefault(_ region: OpaquePointer, offset: Int, count: Int, forWriting: Bool) throws(Errno) {
        _ = try retryingInterrupts("cowmem_prefault") { () -> OpaquePointer? in
            cowmem_prefault(region, size_t(offset), size_t(count), forWriting ? 1 : 0) == 0 ? region : nil
        }
    }

    /// `cowmem_dirty_pages`: the indices of the pages that may differ from the region's
    /// origin, in ascending order.
    static func dirtyPages(_ region: OpaquePointer) throws(Errno) -> [Int] {
        // Most lists are short: one call with room for 256 pages, a second one sized by the
        // count the first returned otherwise (again if another thread wrote meanwhile).
        var capacity = 256
        while true {
            var count = 0
            var error: Errno? = nil
            let pages = [Int](unsafeUninitializedCapacity: capacity) { buffer, initialized in
                count = cowmem_dirty_pages(region, buffer.baseAddress, capacity)
                if count < 0 { error = failure("cowmem_dirty_pages") }  // before errno moves
                initialized = max(0, min(count, capacity))
            }
            if let error { throw error }
            if count <= capacity { return pages }
            capacity = count
        }
    }

    /// `cowmem_reset`. On failure every byte reads as its value before or its origin value.
    static func reset(_ region: OpaquePointer) throws(Errno) {
        _ = try retryingInterrupts("cowmem_reset") { () -> OpaquePointer? in
            cowmem_reset(region) == 0 ? region : nil
        }
    }

    /// `cowmem_copy`. On failure neither region changed.
    static func copy(into destination: OpaquePointer, from source: OpaquePointer) throws(Errno) {
        _ = try retryingInterrupts("cowmem_copy") { () -> OpaquePointer? in
            cowmem_copy(destination, source) == 0 ? destination : nil
        }
    }

    /// `cowmem_save`. `descriptor` is the caller's: `EBADF` is their mistake, not ours.
    static func save(_ region: OpaquePointer, to descriptor: CInt) throws(Errno) {
        // The snapshot is written from offset 0 and the length set at the end, so a call
        // interrupted part-way is simply made again.
        _ = try retryingInterrupts("cowmem_save", callerDescriptor: true) { () -> OpaquePointer? in
            cowmem_save(region, descriptor) == 0 ? region : nil
        }
    }

    /// `cowmem_load`. `descriptor` is the caller's: `EBADF` is their mistake, not ours.
    static func load(from descriptor: CInt) throws(Errno) -> OpaquePointer {
        try retryingInterrupts("cowmem_load", callerDescriptor: true) { cowmem_load(descriptor) }
    }

    /// `cowmem_stats`.
    static func statistics(_ region: OpaquePointer) throws(Errno) -> cowmem_stats {
        var statistics = cowmem_stats()
        _ = try retryingInterrupts("cowmem_stats") { () -> OpaquePointer? in
            cowmem_stats(region, &statistics) == 0 ? region : nil
        }
        return statistics
    }

    /// `cowmem_backend`: the fault mechanism's name.
    static func backendName() throws(Errno) -> String {
        guard let name = cowmem_backend() else { throw failure("cowmem_backend") }
        return String(cString: name)
    }

    /// `cowmem_features`: the optional features in effect, comma-separated.
    static func features() throws(Errno) -> String {
        guard let features = cowmem_features() else { throw failure("cowmem_features") }
        return String(cString: features)
    }

    /// `cowmem_page_size`.
    static var pageSize: Int { Int(cowmem_page_size()) }

    /// `cowmem_server_claim`: the descriptor to poll, or `EBUSY` if another server runs.
    static func claimFaultServer() throws(Errno) -> CInt {
        let descriptor = cowmem_server_claim()
        guard descriptor >= 0 else { throw failure("cowmem_server_claim") }
        return descriptor
    }

    /// `cowmem_server_handle`: how many fault messages it resolved.
    static func handleFaults() throws(Errno) -> Int {
        let handled = cowmem_server_handle()
        guard handled >= 0 else { throw failure("cowmem_server_handle") }
        return Int(handled)
    }

    /// Calls `body` until it returns non-nil or fails with something other than `EINTR`.
    /// `callerDescriptor` says that the call was given a descriptor of the caller's, which
    /// makes `EBADF` an error to report rather than a bug of ours.
    private static func retryingInterrupts<T>(
        _ function: StaticString, callerDescriptor: Bool = false, _ body: () -> T?
    ) throws(Errno) -> T {
        while true {
            if let result = body() { return result }
            let error = failure(function, callerDescriptor: callerDescriptor)
            if error != .interrupted { throw error }
        }
    }

    /// The current `errno`, after trapping on values that can only be our own bug: a bad
    /// address, or a bad descriptor when every descriptor involved is the library's own.
    static func failure(_ function: StaticString, callerDescriptor: Bool = false) -> Errno {
        let error = Errno(rawValue: errno)
        switch error {
        case .badFileDescriptor where !callerDescriptor, .badAddress:
            fatalError("\(function) failed with \(error): a bug in CowMem")
        default:
            return error
        }
    }
}
