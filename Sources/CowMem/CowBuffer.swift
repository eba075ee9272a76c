import Builtin
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
/// ### Memory
///
/// A buffer's storage goes when the last buffer holding it does, with one exception: after a
/// copy was written, which cloned the storage, the copy's storage holds the one it was cloned
/// from for as long as that storage may still be compared with it cheaply (see Equality). So
/// when every buffer holding the original storage is gone first, the original stays until a
/// clone is next made from the copy's storage, or that storage goes; what it keeps is the
/// old versions of the pages written since the clone.
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
    /// The storage (a ``CowBufferStorage``), or for an empty buffer the object that every
    /// empty buffer shares, which has no region (``CowBufferObject/empty``). Never `nil`: the
    /// uniqueness check of a write (`Builtin.beginCOWMutation`) takes a class reference, not
    /// an optional one.
    @usableFromInline
    internal var _object: CowBufferObject

    /// The storage's first byte (``CowBufferStorage/base``), `nil` for an empty buffer.
    ///
    /// Kept in the value as well as in the storage so that a loop of writes reads it from the
    /// buffer variable, which no byte written through it can alias, and can load it once before
    /// the loop; loaded from the storage object, it is loaded again after every byte.
    /// `nonisolated(unsafe)` only because pointers are not `Sendable`: it changes only with
    /// `_object`, in the same mutation.
    @usableFromInline
    nonisolated(unsafe) internal var _base: UnsafeMutableRawPointer?

    /// The number of bytes (``count``).
    @usableFromInline
    internal let _count: Int

    /// The number of bytes; fixed for the life of the buffer.
    @inlinable
    public var count: Int {
        // Read through a getter marked as an array's count is, so that code which reads the
        // count does not stop the optimizer from taking the uniqueness check out of a loop
        // (see `_makeMutableAndUnique()`).
        @_semantics("array.get_count")
        get { _count }
    }

    /// An empty buffer. It has no region.
    @inlinable
    public init() {
        _object = CowBufferObject.empty
        _base = nil
        _count = 0
    }

    /// The storage; `nil` for an empty buffer.
    internal var storage: CowBufferStorage? {
        _count > 0 ? unsafeDowncast(_object, to: CowBufferStorage.self) : nil
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
        _object = storage
        _base = storage.base
        _count = count
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
    /// A loop of subscript reads costs what the same loop over an `Array` costs, and in
    /// optimized code so does a loop of subscript writes: each write asks whether the storage
    /// is shared, and the optimizer asks that once, before the loop, in the loops where it
    /// does so for an array: for a buffer in a local variable or an `inout` parameter that the
    /// function uses only through its subscript and `count`, whatever else the loop does; and
    /// for any loop that does nothing but read and write buffers' bytes. A loop that copies the
    /// buffer keeps the check. Elsewhere, for example in a loop that writes a buffer kept in a
    /// class and calls a function the optimizer cannot see into, every write asks, as an
    /// array's does there, and the loop costs many times what it costs when the question is
    /// asked once. To ask once whatever the loop does, write through one ``mutableSpan``:
    /// `var bytes = buffer.mutableSpan; for i in bytes.indices { bytes[i] = 0 }`.
    ///
    /// - Parameter position: an index in `0..<count`.
    @inlinable
    public subscript(position: Int) -> UInt8 {
        get {
            _checkIndex(position)
            return _elementAddress(position).pointee
        }
        _modify {
            _checkIndex(position)
            _makeMutableAndUnique()
            let address = _elementAddress(position)
            defer { _endMutation() }
            yield &address.pointee
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
        guard count > 0, !isKnownUniquelyReferenced(&_object), _isShared(changing: false) else { return }
        let clone = try storage.unsafelyUnwrapped.cloneForWriting()
        _object = clone
        _base = clone.base
    }

    /// The check every write makes: makes the storage this buffer's own, ready to be written,
    /// unless it already is. The buffer must not be empty. Traps if the storage cannot be
    /// cloned.
    ///
    /// The optimizer removes this check from a loop of writes as it removes an array's. The
    /// question "is the storage shared?" is `Builtin.beginCOWMutation`, which is what
    /// `Array` asks (`isKnownUniquelyReferenced` lowers to `is_unique`, which no pass folds
    /// or moves). Marked `array.make_mutable`, the call is copied before the loop, with the
    /// ``_endMutation()`` that follows it (COWArrayOpts); the `begin_cow_mutation` left in
    /// the loop then follows an `end_cow_mutation` on every path with nothing in between
    /// that could copy the reference, so COWOpts folds its answer to "not shared", and the
    /// loop stores bytes only, which LLVM vectorises. COWArrayOpts copies the call when the
    /// buffer is an `inout` parameter or a local variable and every use of it in the function
    /// is one of the calls it knows (`count` is read through `array.get_count`, bytes through
    /// ``_elementAddress(_:)``, marked `array.get_element_address`), or else when the loop
    /// does nothing with side effects but those calls and stores to the elements they give.
    /// It does not copy it when the loop may copy the buffer and write afterwards, so those
    /// writes still check; nor does COWOpts fold a check that a copy of the reference comes
    /// before.
    ///
    /// Only the uniqueness answer is folded: anything else this function checked would stay
    /// in the loop, and its branch would keep the loop from being vectorised. So the one other
    /// case that needs the slow path, a storage that is *lent* (a clone was made from it at
    /// its current generation, and that clone's origin must not change in place without the
    /// generation moving on; see ``CowBufferStorage/generation``), makes the storage not
    /// unique: the clones made from it hold an extra reference to it
    /// (``CowBufferLease``) until the next write through a buffer that owns it otherwise
    /// alone. The slow path tells the two cases apart (``_isShared(changing:)``). Earlier
    /// designs checked a `lent` flag next to the uniqueness check, which kept a load and a
    /// branch in every loop; and a copy token (a one-element array next to the storage, copied
    /// when shared) was rejected as unsound: the array copies itself and releases the shared
    /// buffer before the code after it runs, so the other copy can start writing the storage
    /// in place while this one is still cloning it. The test of two copies written together
    /// on two threads (`CowBufferValueTests`) fails on such a prototype.
    @inlinable
    @_semantics("array.make_mutable")
    internal mutating func _makeMutableAndUnique() {
        if _slowPath(!Bool(Builtin.beginCOWMutation(&_object))) {
            _prepareForWriting()
        }
    }

    /// Ends what ``_makeMutableAndUnique()`` began: each `begin_cow_mutation` is followed by
    /// an `end_cow_mutation`, as in `Array`, which is what lets the optimizer fold the next
    /// check. The bytes live in the region, not in the object, so writes through the address
    /// may come after it.
    @inlinable
    @_semantics("array.end_mutation")
    internal mutating func _endMutation() {
        Builtin.endCOWMutation(&_object)
    }

    /// The address of the byte at `position`, for the subscript's write; marked so that the
    /// optimizer knows the store through it writes an element, not the buffer (see
    /// ``_makeMutableAndUnique()``).
    @inlinable
    @_semantics("array.get_element_address")
    internal func _elementAddress(_ position: Int) -> UnsafeMutablePointer<UInt8> {
        _base.unsafelyUnwrapped.assumingMemoryBound(to: UInt8.self) + position
    }

    /// The address of the storage, made this buffer's own and ready to be written, for the
    /// APIs that hand out the bytes to write. The buffer must not be empty.
    @inlinable
    @inline(__always)
    internal mutating func _writableBase() -> UnsafeMutableRawPointer {
        _makeMutableAndUnique()
        _endMutation()
        return _base.unsafelyUnwrapped
    }

    /// The rare part of ``_makeMutableAndUnique()``: clone a storage that copies share, or,
    /// if only the clones made from it hold it besides this buffer, move it to a new
    /// generation (``CowBufferStorage/beginChange()``) and write it in place.
    @usableFromInline
    @inline(never)
    internal mutating func _prepareForWriting() {
        guard _isShared(changing: true) else { return }
        do {
            let clone = try storage.unsafelyUnwrapped.cloneForWriting()
            _object = clone
            _base = clone.base
        } catch {
            fatalError("CowBuffer: cloning the storage for a write failed: \(error)")
        }
    }

    /// Whether another buffer shares the storage, not counting the reference that the clones
    /// made from it hold while it is lent. Called when the storage is not uniquely referenced.
    ///
    /// That reference is set aside, and uniqueness asked again. If the storage is now unique
    /// and `changing`, it moves to a new generation and the reference is not put back: the
    /// clones made so far no longer have this content as their origin. Otherwise the
    /// reference is put back. Nothing is held while uniqueness is asked: a temporary reference
    /// would make the answer "shared". While the reference is set aside this buffer still
    /// holds the storage, so no other buffer can find it unique meanwhile.
    internal mutating func _isShared(changing: Bool) -> Bool {
        guard storage.unsafelyUnwrapped.setAsideLease() else { return true }
        let shared = !isKnownUniquelyReferenced(&_object)
        if !shared && changing {
            storage.unsafelyUnwrapped.beginChange()
        } else {
            storage.unsafelyUnwrapped.restoreLease()
        }
        return shared
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
        try body(UnsafeRawBufferPointer(start: _base, count: count))
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
        try body(UnsafeBufferPointer(start: _base?.assumingMemoryBound(to: UInt8.self), count: count))
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
            let start = UnsafePointer(_base?.assumingMemoryBound(to: UInt8.self))
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
            let start = UnsafeRawPointer(_base)
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
    /// of them costs what the same loop costs on an array whatever else the loop does, where a
    /// loop of subscript writes asks once only when the optimizer can take that question out
    /// of it (see ``subscript(_:)``).
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

/// What a ``CowBuffer`` refers to: a ``CowBufferStorage``, or for an empty buffer the one
/// instance of this class itself, ``empty``, which has no region and is never written.
@usableFromInline
internal class CowBufferObject: @unchecked Sendable {
    @usableFromInline
    internal init() {}

    /// The object every empty buffer refers to.
    @usableFromInline
    internal static let empty = CowBufferObject()
}

/// The region behind one or more ``CowBuffer`` values, with what equality needs to know
/// about its history.
///
/// `@unchecked Sendable`, with the reasoning `Array`'s storage relies on: the mutable state
/// (the region's bytes and `generation`) is only ever changed through a buffer that holds
/// the *only* reference (`isKnownUniquelyReferenced`, once the reference its clones hold
/// is set aside; see ``CowBuffer/_isShared(changing:)``), and a storage shared by several
/// buffers, which is the only kind another thread can see, is never mutated: a write through
/// any of them first clones it. The other stored properties are constants or behind a lock
/// (`leases`), and the C calls made on a shared region (clone, dirty pages) are thread-safe.
@usableFromInline
internal final class CowBufferStorage: CowBufferObject, @unchecked Sendable {
    let region: Region
    let base: UnsafeMutableRawPointer
    let id: UInt64

    /// Which state of this storage's content the clones made from it may have as their
    /// origin: it changes when the storage is written after a clone was made from it while
    /// that clone (or another made at the same generation) still exists, and only then, so
    /// that a loop of writes pays nothing for it (see ``isLent``).
    ///
    /// Atomic, though only a buffer that holds the storage alone changes it: a clone made
    /// through another buffer reads it just before that buffer lets the storage go, and the
    /// reference count that orders the two is not something a race detector sees.
    var generation: UInt64 { _generation.load(ordering: .acquiring) }

    private let _generation = Atomic<UInt64>(0)

    /// The storage this one's region was cloned from, and that storage's `generation` then:
    /// while the source's generation is still that, its content is this region's origin.
    let source: (id: UInt64, generation: UInt64)?

    /// The leases this storage takes part in; see ``CowBufferLease``.
    private let leases: Mutex<Leases>

    private struct Leases {
        /// The lease of the clones made from this storage at its current generation, while
        /// one of them exists (they hold it; this does not).
        weak var lent: CowBufferLease?

        /// The lease of the clones made from ``source`` at that generation, this one among
        /// them: it keeps the source from changing in place while this storage exists, unless
        /// the source moves to a new generation first.
        var fromSource: CowBufferLease?
    }

    init(region: consuming Region, source: (id: UInt64, generation: UInt64)?, lease: CowBufferLease? = nil) {
        base = region.unsafeBaseAddress
        id = nextStorageID.wrappingAdd(1, ordering: .relaxed).oldValue
        self.source = source
        leases = Mutex(Leases(lent: nil, fromSource: lease))
        self.region = region
    }

    deinit {
        // The sources that only this storage kept alive go with it. One after the other, not
        // by each one's deinit releasing the next: an undo history dropped at once leaves a
        // chain as long as the history, and recursion that deep could exhaust a thread's stack.
        var next = leases.withLock { $0.fromSource.take() }
        while var lease = next {
            next = nil
            guard isKnownUniquelyReferenced(&lease), var lender = lease.takeLender(),
                  isKnownUniquelyReferenced(&lender) else { break }
            next = lender.leases.withLock { $0.fromSource.take() }
        }
    }

    /// Whether a clone was made from this storage at the current ``generation`` and still
    /// exists: the next write must move to a new generation first. Its clones then hold a
    /// reference to this storage, so that a buffer holding it otherwise alone still finds it
    /// not unique, and takes the slow path, where the reference is dropped.
    var isLent: Bool {
        leases.withLock { $0.lent?.hasLender ?? false }
    }

    /// A storage of its own for a buffer about to write: a clone of this one's region, which
    /// joins the lease of this storage's current generation.
    func cloneForWriting() throws(CowMemError) -> CowBufferStorage {
        let region = try region.clone()
        let lease = leases.withLock { leases in
            if let lease = leases.lent {
                lease.restoreLender(self)   // in case a buffer has set it aside meanwhile
                return lease
            }
            let lease = CowBufferLease(lender: self)
            leases.lent = lease
            return lease
        }
        releaseOrphanedSource()
        return CowBufferStorage(region: region, source: (id, generation), lease: lease)
    }

    /// Drops the reference the lent clones hold to this storage, if there is one: see
    /// ``CowBuffer/_isShared(changing:)``, which then asks whether the storage is unique.
    func setAsideLease() -> Bool {
        releaseOrphanedSource()
        let lender = leases.withLock { $0.lent?.takeLender() }
        return lender != nil   // the reference goes when `lender` does, before the caller asks
    }

    /// Puts back what ``setAsideLease()`` dropped, if the lent clones still exist.
    func restoreLease() {
        leases.withLock { $0.lent?.restoreLender(self) }
    }

    /// Called by the buffer that owns this storage alone, once it has set its lease aside,
    /// before it writes: the clones made so far no longer have this content as their origin.
    func beginChange() {
        _generation.wrappingAdd(1, ordering: .releasing)
        leases.withLock { $0.lent = nil }
    }

    /// Lets the source go if nothing but the lease this storage shares with the other clones
    /// made from it at that generation holds it: no buffer can write it or compare with it
    /// any more.
    private func releaseOrphanedSource() {
        let lease = leases.withLock { $0.fromSource }
        let orphan = lease?.takeLenderIfOrphaned()
        _ = orphan   // released here, outside the locks
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

/// The reference that the clones made from a storage at one generation hold to it: while it
/// holds, a buffer that owns that storage otherwise alone finds it not unique, and its next
/// write takes the slow path, which drops the reference and moves the storage to a new
/// generation (``CowBuffer/_isShared(changing:)``). So a write that needs that step is
/// caught by the same uniqueness check as a write to a shared storage, the one check the
/// optimizer folds in a loop.
///
/// The clones share one lease; it goes when the last of them does, and the reference with
/// it. A lender that no buffer holds any more is of no use to its clones, and is let go by
/// the next clone or write that takes the slow path through one of them
/// (`releaseOrphanedSource`), or when they go.
internal final class CowBufferLease: Sendable {
    private let lender: Mutex<CowBufferStorage?>

    init(lender: CowBufferStorage) {
        self.lender = Mutex(lender)
    }

    /// Whether the reference is held.
    var hasLender: Bool {
        lender.withLock { $0 != nil }
    }

    /// Takes the reference out, to be released by the caller.
    func takeLender() -> CowBufferStorage? {
        lender.withLock { $0.take() }
    }

    /// Holds `storage` again, unless the reference is held.
    func restoreLender(_ storage: CowBufferStorage) {
        lender.withLock { lender in
            if lender == nil { lender = storage }
        }
    }

    /// Takes the reference out if it is the only one to the lender.
    func takeLenderIfOrphaned() -> CowBufferStorage? {
        lender.withLock { lender in
            isKnownUniquelyReferenced(&lender) ? lender.take() : nil
        }
    }
}
