import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A fixed-size byte buffer with the value semantics of `Array`, whose copies cost nothing
/// and whose first write after a copy copies only the page it touches.
///
/// `var copy = buffer` shares the buffer's memory, as with an array. The first change made
/// through either of them afterwards clones the shared ``Region`` (which copies no page
/// data) and writes the clone, so only the pages that are then written are copied, one page
/// at a time. An `Array` copies all of its elements at that point instead, which costs time
/// and memory in proportion to its size: for a 256 MiB buffer that is the difference
/// between a few microseconds and a few hundred milliseconds.
///
/// ```swift
/// var image = try CowBuffer(repeating: 0xFF, count: 64 << 20)   // 64 MiB
/// var history: [CowBuffer] = []
///
/// history.append(image)      // keeps the state: no copy
/// image[1_000_000] = 0       // clones the storage, copies one page
/// image = history.removeLast()   // undo: no copy either
/// ```
///
/// ### Count and storage
///
/// A buffer's ``count`` is fixed when it is created: a `CowBuffer` offers no append or
/// remove. The count is the number of bytes asked for; the storage is a region of that
/// size rounded up to whole pages (``Region/pageSize``), so the last page may have a tail
/// that no API of the buffer exposes. An empty buffer has no region at all.
///
/// ### Zero sizes
///
/// One rule holds for the whole API: zero bytes are a value, not memory. Every way of making
/// a buffer of zero bytes (``init()``, ``init(count:)``, ``init(repeating:count:)``,
/// ``init(_:)`` with no bytes, ``init(adopting:count:)`` with a count of zero) gives the
/// empty buffer, which has no region, and all empty buffers are equal. A ``Region`` is
/// memory and always has at least one page, so ``Region/init(size:)`` refuses zero with
/// ``CowMemError/Code/invalidSize``, as it refuses negative sizes. Negative counts are
/// refused the same way by the initialisers that throw, and stop the program in
/// ``init(adopting:count:)``, which does not throw and takes them as a programming error.
///
/// ### Errors
///
/// Creating a buffer reports failure with a ``CowMemError``. A write after a copy must
/// clone the storage, which can fail too (out of memory, or no file descriptor left); like
/// an array that cannot allocate, the write then stops the program. Call ``makeUnique()``
/// before writing to get that failure as an error instead.
///
/// ### Threads
///
/// A buffer is `Sendable`: copies may go to other tasks and threads, and each side reads
/// and writes its own copy without locks, as with arrays.
///
/// ### Equality
///
/// Two buffers are equal when their counts and bytes are. Comparing copies of each other is
/// cheap: a buffer and an unchanged copy share their storage and compare equal at once; a
/// buffer written after it was copied from another one that has not changed since is
/// compared only on the pages it wrote (``Region/dirtyPages()``). Other buffers are compared
/// byte by byte.
@frozen
public struct CowBuffer: Sendable {
    /// The storage; `nil` for an empty buffer.
    @usableFromInline
    internal var storage: CowBufferStorage?

    /// The number of bytes; fixed for the life of the buffer.
    public let count: Int

    /// An empty buffer. It has no region.
    @inlinable
    public init() {
        storage = nil
        count = 0
    }

    /// A zero-filled buffer of `count` bytes; a `count` of zero gives the empty buffer, which
    /// has no region (see ``CowBuffer`` and ``Region/init(size:)`` for the zero-size rule).
    ///
    /// - Parameter count: the number of bytes, zero or more.
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/invalidSize`` if `count` is
    ///   negative, ``CowMemError/Code/outOfMemory`` or
    ///   ``CowMemError/Code/outOfFileDescriptors`` if the region cannot be created.
    ///
    /// The C function is `cowmem_create`.
    public init(count: Int) throws(CowMemError) {
        guard count > 0 else {
            guard count == 0 else {
                throw CowMemError(
                    refusing: .invalidSize, in: "CowBuffer(count:)",
                    because: "count is \(count); a buffer's count cannot be negative")
            }
            self.init()
            return
        }
        self.init(adopting: try Region(size: count), count: count)
    }

    /// A buffer of `count` bytes that all hold `value`.
    ///
    /// - Parameters:
    ///   - value: the byte every position holds.
    ///   - count: the number of bytes, zero or more.
    /// - Throws: as ``init(count:)``.
    public init(repeating value: UInt8, count: Int) throws(CowMemError) {
        guard count >= 0 else {
            throw CowMemError(
                refusing: .invalidSize, in: "CowBuffer(repeating:count:)",
                because: "count is \(count); a buffer's count cannot be negative")
        }
        try self.init(count: count)
        if value != 0, let storage {
            storage.base.initializeMemory(as: UInt8.self, repeating: value, count: count)
        }
    }

    /// A buffer holding a copy of `bytes`, for example `CowBuffer([1, 2, 3])`, an
    /// `ArraySlice<UInt8>`, or `CowBuffer((0..<100).lazy.map { UInt8($0) })`.
    ///
    /// Contiguous bytes are copied with one `memcpy`; other sequences are first gathered into
    /// an array, since the buffer's count must be known before its region is created.
    ///
    /// - Parameter bytes: the bytes to copy, in order.
    /// - Throws: as ``init(count:)``.
    public init(_ bytes: some Sequence<UInt8>) throws(CowMemError) {
        let contiguous = bytes.withContiguousStorageIfAvailable { elements in
            Result { () throws(CowMemError) in try CowBuffer(copying: UnsafeRawBufferPointer(elements)) }
        }
        if let contiguous {
            self = try contiguous.get()
            return
        }
        let gathered = Array(bytes)
        self = try gathered.withUnsafeBytes { raw in
            Result { () throws(CowMemError) in try CowBuffer(copying: raw) }
        }.get()
    }

    /// A buffer holding a copy of `raw`'s bytes.
    private init(copying raw: UnsafeRawBufferPointer) throws(CowMemError) {
        try self.init(count: raw.count)
        if let storage, let source = raw.baseAddress {
            storage.base.copyMemory(from: source, byteCount: raw.count)
        }
    }

    /// A buffer whose storage is `region`, holding its first `count` bytes (all of them by
    /// default): for example a region opened with ``Region/init(loading:)-(FilePath)``.
    ///
    /// The buffer owns the region from now on; the region's bytes past `count` are never
    /// read or written through the buffer. A `count` of zero makes an empty buffer, which
    /// has no region: `region` is destroyed. A `count` below zero or above the region's size
    /// is a programming error and stops the program, as an index out of range does.
    ///
    /// - Parameters:
    ///   - region: the region to own from now on.
    ///   - count: the number of bytes the buffer holds, from `0` to `region.size`; all of them when
    ///     `nil`.
    public init(adopting region: consuming Region, count: Int? = nil) {
        let count = count ?? region.size
        precondition(count >= 0 && count <= region.size,
                     "CowBuffer(adopting:count:): count \(count) is outside the region's 0...\(region.size) bytes")
        guard count > 0 else {
            _ = consume region
            self.init()
            return
        }
        self.init(storage: CowBufferStorage(region: region, source: nil), count: count)
    }

    private init(storage: CowBufferStorage, count: Int) {
        self.storage = storage
        self.count = count
    }

    /// The former name of ``init(adopting:count:)``.
    ///
    /// - Parameters:
    ///   - region: the region to own from now on.
    ///   - count: the number of bytes the buffer holds; all of them when `nil`.
    @available(*, deprecated, renamed: "init(adopting:count:)")
    public init(_ region: consuming Region, count: Int? = nil) {
        self.init(adopting: region, count: count)
    }

    /// Whether the buffer has no bytes.
    @inlinable
    public var isEmpty: Bool { count == 0 }

    /// The byte at `position`, which must be in `0..<count`.
    ///
    /// Setting a byte of a buffer that shares its storage with a copy first clones the
    /// storage (see ``makeUnique()``); then the page that holds the byte is copied, once.
    ///
    /// A loop of subscript reads costs what the same loop over an `Array` costs. Each write
    /// asks the runtime whether the storage is shared, and unlike an array's, that question
    /// stays in the loop, so a loop of subscript writes is many times slower than on an
    /// array. To write many bytes, write them through one ``mutableSpan``, which asks once:
    /// `var bytes = buffer.mutableSpan; for i in bytes.indices { bytes[i] = 0 }`.
    ///
    /// - Parameter position: an index in `0..<count`.
    @inlinable
    public subscript(position: Int) -> UInt8 {
        get {
            _checkIndex(position)
            return storage.unsafelyUnwrapped.base.load(fromByteOffset: position, as: UInt8.self)
        }
        _modify {
            _checkIndex(position)
            let base = _writableBase()
            var byte = base.load(fromByteOffset: position, as: UInt8.self)
            defer { base.storeBytes(of: byte, toByteOffset: position, as: UInt8.self) }
            yield &byte
        }
    }

    @inlinable
    @inline(__always)
    internal func _checkIndex(_ position: Int) {
        precondition(UInt(bitPattern: position) < UInt(bitPattern: count), "CowBuffer index out of range")
    }

    /// Gives the buffer storage of its own, if it shares it with a copy, so that the next
    /// write does not have to; reports a failure instead of stopping the program.
    ///
    /// Cloning copies no page data: it costs microseconds whatever the count. A buffer that
    /// already owns its storage alone is left as it is.
    ///
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/outOfMemory`` (see ``Region/clone()``
    ///   for sizes that can never be cloned), ``CowMemError/Code/outOfMappings`` or
    ///   ``CowMemError/Code/outOfFileDescriptors``.
    ///
    /// The C function is `cowmem_clone`.
    public mutating func makeUnique() throws(CowMemError) {
        guard storage != nil, !isKnownUniquelyReferenced(&storage) else { return }
        storage = try storage.unsafelyUnwrapped.cloneForWriting()
    }

    /// The address of the storage, made this buffer's own and ready to be written: the one
    /// check every write makes. Traps if the storage cannot be cloned. The buffer must not be
    /// empty.
    ///
    /// In a loop of subscript writes this stays in the loop, as a call to
    /// `swift_isUniquelyReferenced_native` and a load of `lent` before each byte's store
    /// (the release code of the benchmark shows it), and that per-byte branch also keeps the
    /// loop from being vectorised. An array's check leaves such loops in two steps: the
    /// optimizer copies the call marked `array.make_mutable` before the loop, then folds the
    /// `begin_cow_mutation` left inside it, knowing the buffer is still unique.
    /// `isKnownUniquelyReferenced` lowers to `is_unique` instead, which no pass folds or
    /// moves; `begin_cow_mutation` is emitted only through `Builtin`. Marking a check like
    /// this one `@_semantics("array.make_mutable")` (tried on a model of this type) gets a
    /// copy of it placed before the loop and leaves the per-byte one where it is. The answer
    /// cannot live in the buffer value itself, since `var b = a` copies the value bit for bit
    /// and only the reference count tells the two apart. A copy token (a one-element array
    /// next to the storage, copied when shared) was tried and rejected: the array copies
    /// itself and releases the shared buffer before the code after it runs, so the other
    /// copy can start writing the storage in place while this one is still cloning it. The
    /// test of two copies written together on two threads (`CowBufferValueTests`) fails on
    /// such a prototype.
    @inlinable
    @inline(__always)
    internal mutating func _writableBase() -> UnsafeMutableRawPointer {
        if _slowPath(!isKnownUniquelyReferenced(&storage) || storage.unsafelyUnwrapped.isLent) {
            _prepareForWriting()
        }
        return storage.unsafelyUnwrapped.base
    }

    /// The rare part of ``_writableBase()``: clone a shared storage, or note that a storage
    /// that was cloned from is about to change (see ``CowBufferStorage/generation``).
    @usableFromInline
    @inline(never)
    internal mutating func _prepareForWriting() {
        if isKnownUniquelyReferenced(&storage) {
            storage.unsafelyUnwrapped.beginChange()
            return
        }
        do {
            storage = try storage.unsafelyUnwrapped.cloneForWriting()
        } catch {
            fatalError("CowBuffer: cloning the storage for a write failed: \(error)")
        }
    }

    /// Calls `body` with the buffer's `count` bytes, for reading. Reading copies nothing.
    ///
    /// - Parameter body: a closure that reads the buffer's bytes; its result is returned.
    public func withBytes<Result: ~Copyable, Failure: Error>(
        _ body: (RawSpan) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        guard let storage else {
            return try body(RawSpan(_unsafeBytes: UnsafeRawBufferPointer(start: nil, count: 0)))
        }
        let base = UnsafeRawPointer(storage.base)   // through a local, as in withMutableBytes
        return try body(RawSpan(_unsafeStart: base, byteCount: count))
    }

    /// Calls `body` with the buffer's `count` bytes, for reading and writing.
    ///
    /// If the buffer shares its storage with a copy, the storage is cloned first (see
    /// ``makeUnique()``); then each page `body` writes is copied, once.
    ///
    /// - Parameter body: a closure that reads and writes the buffer's bytes; its result is
    ///   returned.
    public mutating func withMutableBytes<Result: ~Copyable, Failure: Error>(
        _ body: (inout MutableRawSpan) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        guard count > 0 else {
            var bytes = MutableRawSpan(
                _unsafeBytes: UnsafeMutableRawBufferPointer(start: nil, count: 0))
            return try body(&bytes)
        }
        // The address goes through a local: a span made straight from the class's property
        // crashes the 6.3 optimizer (an ownership verifier error in CopyPropagation).
        let base = _writableBase()
        var bytes = MutableRawSpan(_unsafeStart: base, byteCount: count)
        return try body(&bytes)
    }

    /// Calls `body` with a pointer to the buffer's `count` bytes, for reading.
    ///
    /// The pointer must not escape `body`.
    ///
    /// - Parameter body: a closure given a pointer to the buffer's bytes; its result is returned.
    @inlinable
    public func withUnsafeBytes<Result: ~Copyable, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(UnsafeRawBufferPointer(start: storage?.base, count: count))
    }

    /// Calls `body` with a pointer to the buffer's `count` bytes, for reading and writing:
    /// as the buffer of `read(2)` and other calls that take a pointer.
    ///
    /// If the buffer shares its storage with a copy, the storage is cloned first. The
    /// pointer must not escape `body`.
    ///
    /// - Parameter body: a closure given a mutable pointer to the buffer's bytes; its result is
    ///   returned.
    @inlinable
    public mutating func withUnsafeMutableBytes<Result: ~Copyable, Failure: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        let base = count > 0 ? _writableBase() : nil
        return try body(UnsafeMutableRawBufferPointer(start: base, count: count))
    }
}

extension CowBuffer {
    /// Calls `body` with a pointer to the buffer's `count` bytes, for reading: as
    /// `Array.withUnsafeBufferPointer`.
    ///
    /// The pointer must not escape `body`. An empty buffer passes a buffer pointer with no
    /// base address.
    ///
    /// - Parameter body: a closure given a buffer pointer to the bytes; its result is returned.
    @inlinable
    public func withUnsafeBufferPointer<Result: ~Copyable, Failure: Error>(
        _ body: (UnsafeBufferPointer<UInt8>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(UnsafeBufferPointer(start: storage?.base.assumingMemoryBound(to: UInt8.self), count: count))
    }

    /// Calls `body` with a pointer to the buffer's `count` bytes, for reading and writing:
    /// as `Array.withUnsafeMutableBufferPointer`.
    ///
    /// If the buffer shares its storage with a copy, the storage is cloned first. The
    /// pointer must not escape `body`, and `body` must not replace it with another one.
    ///
    /// - Parameter body: a closure given a mutable buffer pointer to the bytes, which it must not
    ///   replace; its result is returned.
    @inlinable
    public mutating func withUnsafeMutableBufferPointer<Result: ~Copyable, Failure: Error>(
        _ body: (inout UnsafeMutableBufferPointer<UInt8>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        let start = count > 0 ? _writableBase().assumingMemoryBound(to: UInt8.self) : nil
        var elements = UnsafeMutableBufferPointer(start: start, count: count)
        defer {
            precondition(elements.baseAddress == start && elements.count == count,
                         "CowBuffer.withUnsafeMutableBufferPointer: the buffer pointer was replaced")
        }
        return try body(&elements)
    }
}

extension CowBuffer {
    /// The buffer's bytes as a `Span<UInt8>`, for reading: `buffer.span[3]`. Reading copies
    /// nothing.
    ///
    /// The span borrows the buffer: while it is in use the buffer cannot be changed, and it
    /// cannot outlive the buffer. Copies of the buffer may be written meanwhile; they clone
    /// the storage first, so the span keeps showing this buffer's bytes. An empty buffer
    /// gives an empty span.
    @inlinable
    public var span: Span<UInt8> {
        @_lifetime(borrow self)
        borrowing get {
            // Through a local, as in withMutableBytes.
            let start = UnsafePointer(storage?.base.assumingMemoryBound(to: UInt8.self))
            let elements = Span(_unsafeElements: UnsafeBufferPointer(start: start, count: count))
            return unsafe _overrideLifetime(elements, borrowing: self)
        }
    }

    /// The buffer's bytes as a `RawSpan`, for reading, for example to load wider values with
    /// `unsafeLoadUnaligned(fromByteOffset:as:)`. As ``span``, it borrows the buffer.
    @inlinable
    public var bytes: RawSpan {
        @_lifetime(borrow self)
        borrowing get {
            let start = UnsafeRawPointer(storage?.base)
            let raw = RawSpan(_unsafeBytes: UnsafeRawBufferPointer(start: start, count: count))
            return unsafe _overrideLifetime(raw, borrowing: self)
        }
    }

    /// The buffer's bytes as a `MutableSpan<UInt8>`, for reading and writing:
    /// `var bytes = buffer.mutableSpan; for i in bytes.indices { bytes[i] = 0 }`.
    ///
    /// Getting the span does what a write does, once: if the buffer shares its storage with a
    /// copy, the storage is cloned first (see ``makeUnique()``), and then each page written
    /// through the span is copied, once. Writes through the span check nothing more, so a loop
    /// of them costs what the same loop costs on an array, where a loop of subscript writes on
    /// the buffer asks at each byte whether the storage is shared.
    ///
    /// The span holds exclusive access to the buffer while it is in use. If the storage cannot
    /// be cloned, getting the span stops the program, as a subscript write does.
    @inlinable
    public var mutableSpan: MutableSpan<UInt8> {
        @_lifetime(&self)
        mutating get {
            let start = count > 0 ? _writableBase().assumingMemoryBound(to: UInt8.self) : nil
            let elements = MutableSpan(_unsafeElements: UnsafeMutableBufferPointer(start: start, count: count))
            return unsafe _overrideLifetime(elements, mutating: &self)
        }
    }

    /// Calls `body` with the buffer's bytes as a `Span<UInt8>`, for reading:
    /// `buffer.withSpan { $0[3] }`. The closure form of ``span``.
    ///
    /// - Parameter body: a closure that reads the bytes through a span; its result is returned.
    public func withSpan<Result: ~Copyable, Failure: Error>(
        _ body: (Span<UInt8>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(span)
    }

    /// Calls `body` with the buffer's bytes as a `MutableSpan<UInt8>`, for reading and
    /// writing. The closure form of ``mutableSpan``: the storage is cloned first if it is
    /// shared, once, before `body` runs.
    ///
    /// - Parameter body: a closure that reads and writes the bytes through a span; its result is
    ///   returned.
    public mutating func withMutableSpan<Result: ~Copyable, Failure: Error>(
        _ body: (inout MutableSpan<UInt8>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        var elements = mutableSpan
        return try body(&elements)
    }
}

extension CowBuffer: RandomAccessCollection, MutableCollection {
    public typealias Index = Int
    public typealias Indices = Range<Int>

    @inlinable
    public var startIndex: Int { 0 }
    @inlinable
    public var endIndex: Int { count }

    /// Calls `body` with a pointer to the bytes, as every `Sequence` can be asked to: a buffer
    /// always has contiguous storage, so the result is never `nil`.
    ///
    /// - Parameter body: a closure given a buffer pointer to the bytes; its result is returned.
    @inlinable
    public func withContiguousStorageIfAvailable<Result>(
        _ body: (UnsafeBufferPointer<UInt8>) throws -> Result
    ) rethrows -> Result? {
        try withUnsafeBytes { bytes in try body(bytes.assumingMemoryBound(to: UInt8.self)) }
    }

    /// Calls `body` with a mutable pointer to the bytes, cloning shared storage first, as
    /// every `MutableCollection` can be asked to; the result is never `nil`.
    ///
    /// - Parameter body: a closure given a mutable buffer pointer to the bytes, which it must
    ///   not replace; its result is returned.
    @inlinable
    public mutating func withContiguousMutableStorageIfAvailable<Result>(
        _ body: (inout UnsafeMutableBufferPointer<UInt8>) throws -> Result
    ) rethrows -> Result? {
        try withUnsafeMutableBytes { bytes in
            var elements = bytes.assumingMemoryBound(to: UInt8.self)
            return try body(&elements)
        }
    }
}

extension CowBuffer: Equatable {
    /// Whether the two buffers have the same count and the same bytes.
    ///
    /// Buffers that share their storage are equal at once. A buffer that was written after it
    /// was copied from one that has not changed since is compared only on the pages it wrote,
    /// and so are two buffers written after being copied from the same unchanged state.
    /// Otherwise every byte is compared.
    ///
    /// - Parameters:
    ///   - lhs: a buffer.
    ///   - rhs: another buffer.
    public static func == (lhs: CowBuffer, rhs: CowBuffer) -> Bool {
        compare(lhs, rhs).equal
    }

    /// How a comparison was decided; tests check that the cheap ways are taken.
    internal enum ComparisonPath: Equatable {
        /// The counts differ.
        case counts
        /// The two share one storage (or are both empty).
        case sameStorage
        /// Only these many pages could differ, and were compared.
        case pages(Int)
        /// Every byte was compared.
        case everything
    }

    internal static func compare(_ lhs: CowBuffer, _ rhs: CowBuffer) -> (equal: Bool, path: ComparisonPath) {
        guard lhs.count == rhs.count else { return (false, .counts) }
        guard let left = lhs.storage, let right = rhs.storage else { return (true, .sameStorage) }
        if left === right { return (true, .sameStorage) }
        let count = lhs.count
        if let pages = CowBufferStorage.pagesThatMayDiffer(left, right) {
            let equal = pages.allSatisfy { page in
                let start = page * Region.pageSize
                guard start < count else { return true }
                return memcmp(left.base + start, right.base + start, Swift.min(Region.pageSize, count - start)) == 0
            }
            return (equal, .pages(pages.count))
        }
        return (memcmp(left.base, right.base, count) == 0, .everything)
    }
}

extension CowBuffer: Hashable {
    /// Hashes the count and every byte, so that equal buffers hash alike whatever their
    /// history: hashing costs time in proportion to the count, as hashing an array does.
    ///
    /// - Parameter hasher: the hasher to feed the count and the bytes to.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(count)
        withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}

extension CowBuffer: CustomStringConvertible {
    /// `CowBuffer(count: 67108864)`: the count, not the bytes.
    public var description: String { "CowBuffer(count: \(count))" }
}

/// The ids that tell storages apart for as long as the process runs: unlike an object's
/// address, an id is never reused, so a storage's note of where it was cloned from cannot
/// point to a newer storage at the same address.
private let nextStorageID = Atomic<UInt64>(1)

/// The region behind one or more ``CowBuffer`` values, with what equality needs to know
/// about its history.
///
/// `@unchecked Sendable`, with the reasoning `Array`'s storage relies on: the mutable state
/// (the region's bytes and `generation`) is only ever changed through a buffer that holds
/// the *only* reference (`isKnownUniquelyReferenced`), and a storage shared by several
/// buffers, which is the only kind another thread can see, is never mutated: a write through
/// any of them first clones it. The other stored properties are constants, and the C calls
/// made on a shared region (clone, dirty pages) are thread-safe.
@usableFromInline
internal final class CowBufferStorage: @unchecked Sendable {
    let region: Region
    @usableFromInline
    let base: UnsafeMutableRawPointer
    let id: UInt64

    /// Which state of this storage's content the clones made from it may have as their
    /// origin: it changes when the storage is written after a clone was made from it, and
    /// only then, so that a loop of writes pays nothing for it (see ``isLent``).
    var generation: UInt64 = 0

    /// Whether a clone was made from this storage at the current ``generation``: the next
    /// write must move to a new generation first.
    ///
    /// Atomic because the clone that sets it is made through a shared reference, perhaps on
    /// another thread than the one that will write next; every write reads it, and relaxed
    /// loads cost what plain ones do.
    @usableFromInline
    let lent = Atomic<Bool>(false)

    @inlinable
    var isLent: Bool { lent.load(ordering: .relaxed) }

    /// The storage this one's region was cloned from, and that storage's `generation` then:
    /// while the source's generation is still that, its content is this region's origin.
    let source: (id: UInt64, generation: UInt64)?

    init(region: consuming Region, source: (id: UInt64, generation: UInt64)?) {
        base = region.unsafeBaseAddress
        id = nextStorageID.wrappingAdd(1, ordering: .relaxed).oldValue
        self.source = source
        self.region = region
    }

    /// A storage of its own for a buffer about to write: a clone of this one's region.
    func cloneForWriting() throws(CowMemError) -> CowBufferStorage {
        let clone = CowBufferStorage(region: try region.clone(), source: (id, generation))
        lent.store(true, ordering: .relaxed)
        return clone
    }

    /// Called by the buffer that owns this storage alone, before it writes while
    /// ``isLent``: the clones made so far no longer have this content as their origin.
    func beginChange() {
        generation &+= 1
        lent.store(false, ordering: .relaxed)
    }

    /// The pages where `a` and `b` may differ, ascending, when their history says so cheaply;
    /// `nil` when only a full comparison can tell.
    static func pagesThatMayDiffer(_ a: CowBufferStorage, _ b: CowBufferStorage) -> [Int]? {
        do throws(CowMemError) {
            // One was cloned from the other, which has not changed since: the other's content
            // is the clone's origin, so only the clone's dirty pages can differ.
            if let source = b.source, source.id == a.id, source.generation == a.generation {
                return try b.region.dirtyPages()
            }
            if let source = a.source, source.id == b.id, source.generation == b.generation {
                return try a.region.dirtyPages()
            }
            // Both were cloned from the same state of one storage: same origin.
            if let left = a.source, let right = b.source, left == right {
                return merged(try a.region.dirtyPages(), try b.region.dirtyPages())
            }
        } catch {
            // The list could not be made (out of memory): compare everything instead.
        }
        return nil
    }

    /// The union of two ascending lists, ascending.
    private static func merged(_ a: [Int], _ b: [Int]) -> [Int] {
        var result: [Int] = []
        result.reserveCapacity(a.count + b.count)
        var i = 0, j = 0
        while i < a.count || j < b.count {
            if j == b.count || (i < a.count && a[i] < b[j]) {
                result.append(a[i]); i += 1
            } else if i == a.count || b[j] < a[i] {
                result.append(b[j]); j += 1
            } else {
                result.append(a[i]); i += 1; j += 1
            }
        }
        return result
    }
}
