import CCowMem
import SystemPackage

/// A page-aligned block of ordinary read/write memory that can be cloned instantly.
///
/// ``clone()`` returns a new region with the same content without copying it; only the
/// pages that either side later writes are copied. From then on the two are isolated
/// snapshots of each other, and so are clones of clones, to any depth.
///
/// A region owns its memory: it is destroyed when it goes out of scope, or explicitly with
/// ``destroy()``. It is noncopyable, so each region has exactly one owner, and it is
/// `Sendable`, so that owner can hand it to another thread.
///
/// ```swift
/// var document = try Region(size: 1 << 20)
/// document.withMutableBytes { bytes in bytes.storeBytes(of: 42, toByteOffset: 0, as: UInt8.self) }
/// let snapshot = try document.clone()          // instant, whatever the size
/// document.withMutableBytes { bytes in bytes.storeBytes(of: 7, toByteOffset: 0, as: UInt8.self) }
/// snapshot.withBytes { $0.unsafeLoad(as: UInt8.self) }   // still 42
/// ```
///
/// The C type is `cowmem_region`.
public struct Region: ~Copyable {
    // Internal, not private: the extensions in other files of the module call the engine too.
    internal let handle: OpaquePointer

    /// The address of the region's first byte: page-aligned and stable until the region
    /// is destroyed.
    ///
    /// Code that keeps this pointer must not use it after the region is destroyed, and must
    /// make sure that writes through it do not race with other accesses. Prefer
    /// ``withBytes(_:)`` and ``withMutableBytes(_:)``.
    ///
    /// The C function is `cowmem_data`.
    public let unsafeBaseAddress: UnsafeMutableRawPointer

    /// The region's size in bytes: a multiple of ``pageSize``.
    ///
    /// The C function is `cowmem_size`.
    public let size: Int

    /// The page size that regions are measured and copied in, in bytes.
    ///
    /// The C function is `cowmem_page_size`.
    public static var pageSize: Int { Engine.pageSize }

    /// Creates a zero-filled region of at least `size` bytes, rounded up to the page size.
    ///
    /// The first region a process creates also starts the thread that serves its page
    /// faults (see ``FaultServer``).
    ///
    /// ### Zero sizes
    ///
    /// A region is memory, so it has at least one byte (one page): a `size` of zero is
    /// refused with ``CowMemError/Code/invalidSize``, as a negative one is, and nothing is
    /// created. Zero bytes are a value only for ``CowBuffer``: every way of making a buffer of
    /// zero bytes gives the empty buffer, which has no region.
    ///
    /// ### Commit charge
    ///
    /// Creating or cloning a region charges nothing against the system's commit limit: a
    /// region's pages, and a clone's, are charged as they are written.
    ///
    /// - Parameter size: the number of bytes, at least 1; rounded up to a multiple of ``pageSize``.
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/invalidSize`` if `size` is
    ///   not positive, ``CowMemError/Code/outOfMemory`` if it cannot be mapped,
    ///   ``CowMemError/Code/outOfMappings`` if the process has no memory mapping left, or
    ///   ``CowMemError/Code/outOfFileDescriptors``.
    ///
    /// The C function is `cowmem_create`.
    public init(size: Int) throws(CowMemError) {
        guard size > 0 else {
            throw CowMemError(
                refusing: .invalidSize, in: "Region(size:)",
                because: "size is \(size); a region has at least one byte")
        }
        try faultServer.checkUsable()
        self.init(handle: try Engine.create(size: size).get())
    }

    internal init(handle: OpaquePointer) {
        self.handle = handle
        self.unsafeBaseAddress = Engine.data(handle)
        self.size = Engine.size(handle)
    }

    /// Returns a new region whose content equals this one's at the moment of the call.
    ///
    /// No page data is copied: the two regions share their pages until either side writes
    /// one. Afterwards, writes to either region are never seen in the other.
    ///
    /// Cloning while another thread writes this region races the way `memcpy` would: each
    /// page shows either the old or the new bytes.
    ///
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/outOfMemory``,
    ///   ``CowMemError/Code/outOfMappings`` or
    ///   ``CowMemError/Code/outOfFileDescriptors``.
    ///
    /// The C function is `cowmem_clone`.
    public func clone() throws(CowMemError) -> Region {
        Region(handle: try Engine.clone(handle).get())
    }

    /// Destroys the region now and reports a failure, instead of leaving that to `deinit`.
    ///
    /// Every other region keeps its content. If the C library cannot release the region,
    /// its memory stays mapped and is leaked; the error says why.
    ///
    /// The C function is `cowmem_destroy`.
    public consuming func destroy() throws(CowMemError) {
        let handle = self.handle
        discard self
        try Engine.destroy(handle).get()
    }

    deinit {
        // A deinit cannot report a failure; `destroy()` is the way to see one.
        _ = Engine.destroy(handle)
    }

    /// Touches every page under `range` from user space, for reading or for writing,
    /// without changing any byte.
    ///
    /// Only the ``Backend/Kind/userfaultfdUserMode`` backend needs it: there, a system call
    /// such as `read(2)` or `write(2)` that meets a page not filled yet fails with `EFAULT`
    /// instead of being served, so prefault a buffer before handing it to the kernel. With
    /// the other backends it is harmless and unnecessary.
    ///
    /// The C function is `cowmem_prefault`.
    ///
    /// - Parameters:
    ///   - range: the bytes whose pages to touch, within `0..<size`.
    ///   - forWriting: whether to touch the pages for writing (the first write to a shared page
    ///     copies it) rather than for reading.
    public func prefault(_ range: Range<Int>, forWriting: Bool = false) throws(CowMemError) {
        precondition(range.lowerBound >= 0 && range.upperBound <= size,
                     "Region.prefault(_:forWriting:): range \(range) is outside the region's 0..<\(size)")
        try Engine.prefault(handle, offset: range.lowerBound, count: range.count, forWriting: forWriting).get()
    }

    /// Calls `body` with the region's bytes, for reading.
    ///
    /// Reading a page of a clone that nobody has written does not copy it.
    ///
    /// - Parameter body: a closure that reads the region's bytes; its result is returned.
    public func withBytes<Result: ~Copyable, Failure: Error>(
        _ body: (RawSpan) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        let bytes = RawSpan(_unsafeStart: unsafeBaseAddress, byteCount: size)
        return try body(bytes)
    }

    /// Calls `body` with the region's bytes, for reading and writing.
    ///
    /// The first write to a page shared with another region copies that page, once.
    ///
    /// - Parameter body: a closure that reads and writes the region's bytes; its result is
    ///   returned.
    public mutating func withMutableBytes<Result: ~Copyable, Failure: Error>(
        _ body: (inout MutableRawSpan) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        var bytes = MutableRawSpan(_unsafeStart: unsafeBaseAddress, byteCount: size)
        return try body(&bytes)
    }

    /// Calls `body` with a raw pointer to the region's bytes, for reading.
    ///
    /// The pointer must not escape `body`.
    ///
    /// - Parameter body: a closure given a pointer to the region's bytes; its result is returned.
    public func withUnsafeBytes<Result: ~Copyable, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(UnsafeRawBufferPointer(start: unsafeBaseAddress, count: size))
    }

    /// Calls `body` with a raw pointer to the region's bytes, for reading and writing: as a
    /// buffer for `read(2)`, `recv(2)` and other calls that take a pointer.
    ///
    /// The pointer must not escape `body`.
    ///
    /// - Parameter body: a closure given a mutable pointer to the region's bytes; its result is
    ///   returned.
    public mutating func withUnsafeMutableBytes<Result: ~Copyable, Failure: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(UnsafeMutableRawBufferPointer(start: unsafeBaseAddress, count: size))
    }
}

extension Region {
    /// The region's bytes as a `RawSpan`, for reading: `region.bytes.unsafeLoad(as: UInt64.self)`.
    ///
    /// The span borrows the region: while it is in use the region cannot be written, reset
    /// or destroyed, and it cannot outlive the region. Reading a page of a clone that nobody
    /// has written does not copy it.
    public var bytes: RawSpan {
        @_lifetime(borrow self)
        borrowing get {
            let raw = RawSpan(_unsafeStart: UnsafeRawPointer(unsafeBaseAddress), byteCount: size)
            return unsafe _overrideLifetime(raw, borrowing: self)
        }
    }

    /// The region's bytes as a `MutableRawSpan`, for reading and writing. The span holds
    /// exclusive access to the region while it is in use; the first write to a page shared
    /// with another region copies that page, once.
    public var mutableBytes: MutableRawSpan {
        @_lifetime(&self)
        mutating get {
            let raw = MutableRawSpan(_unsafeStart: unsafeBaseAddress, byteCount: size)
            return unsafe _overrideLifetime(raw, mutating: &self)
        }
    }

    /// The region's memory as a span of `Element` values, for reading:
    /// `region.span(of: UInt32.self)[10]` is the `UInt32` at byte offset 40.
    ///
    /// The span has `size / MemoryLayout<Element>.stride` elements, from the first byte of
    /// the region (which is page-aligned, so any element's alignment is met); bytes past the
    /// last whole element are left out. The region's bytes must be valid values of `Element`:
    /// any bytes are, for integer, floating-point and other plain-data types, but not, for
    /// example, for `Bool` or an enum. As ``bytes``, the span borrows the region.
    ///
    /// - Parameter type: the element type; it can be left to the context.
    @_lifetime(borrow self)
    public func span<Element: BitwiseCopyable>(of type: Element.Type = Element.self) -> Span<Element> {
        let start = UnsafeRawPointer(unsafeBaseAddress)
        let elements = Span<Element>(_unsafeBytes: UnsafeRawBufferPointer(start: start, count: elementBytes(Element.self)))
        return unsafe _overrideLifetime(elements, borrowing: self)
    }

    /// The region's memory as a span of `Element` values, for reading and writing:
    /// `var words = region.mutableSpan(of: UInt64.self); words[0] = 1`.
    ///
    /// The elements are those of ``span(of:)``. The span holds exclusive access to the region
    /// while it is in use; the first write to a page shared with another region copies that
    /// page, once.
    ///
    /// - Parameter type: the element type; it can be left to the context.
    @_lifetime(&self)
    public mutating func mutableSpan<Element: BitwiseCopyable>(
        of type: Element.Type = Element.self
    ) -> MutableSpan<Element> {
        let bytes = UnsafeMutableRawBufferPointer(start: unsafeBaseAddress, count: elementBytes(Element.self))
        let elements = MutableSpan<Element>(_unsafeBytes: bytes)
        return unsafe _overrideLifetime(elements, mutating: &self)
    }

    /// The bytes that hold whole `Element`s, from the start of the region.
    private func elementBytes<Element>(_: Element.Type) -> Int {
        precondition(MemoryLayout<Element>.alignment <= Region.pageSize,
                     "Region: \(Element.self) needs an alignment above the page size")
        let stride = MemoryLayout<Element>.stride
        return stride == 0 ? 0 : size / stride * stride
    }
}

// A region may be used from any thread: the C library's calls are thread-safe, and its
// memory is ordinary memory. Sending the handle is sound because it is noncopyable: one
// owner at a time, and the only calls that can run on shared borrows (`clone`, reading)
// are ones the C library allows concurrently. Writes need `mutating` access, which Swift
// grants to one owner at a time; the `unsafe` accessors are the caller's responsibility.
extension Region: @unchecked Sendable {}

extension Region {
    /// A short text for logs, for example `Region(size: 1048576, address: 0x00007f12a0000000)`.
    ///
    /// `CustomStringConvertible` requires a copyable type, so a region offers the property
    /// without the conformance: write `print(region.description)`.
    public var description: String {
        let address = UInt(bitPattern: unsafeBaseAddress)
        let hex = String(address, radix: 16)
        return "Region(size: \(size), address: 0x\(String(repeating: "0", count: max(0, 16 - hex.count)) + hex))"
    }
}
