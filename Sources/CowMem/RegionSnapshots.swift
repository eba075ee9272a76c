import CCowMem
import SystemPackage

// Changes, roll back, snapshots on disk and statistics.
//
// A region's *origin* is its content when it was made: all zeros for `Region(size:)`, the
// source's content at the moment of the call for `clone()`, the file's content for
// `Region(loading:)`. Cloning a region does not change the region's own origin.

extension Region {
    /// The pages that may differ from the region's origin, as page indices in ascending
    /// order: page `i` covers the bytes `i * Region.pageSize ..< (i + 1) * Region.pageSize`.
    ///
    /// The region's *origin* is its content when it was made: all zeros for
    /// ``init(size:)``, the source's content at the moment of the call for ``clone()``, and
    /// the file's content for ``init(loading:)-(FilePath)``. Cloning a region does not change its own
    /// origin, and ``reset()`` brings it back there.
    ///
    /// The list is exact where it matters and cheap to get:
    ///
    /// - every page whose bytes differ from the origin is listed, so copying the listed
    ///   pages from one region into another with the same origin makes the two equal;
    /// - no page that was never written since the region was made or last reset is listed:
    ///   reading a page, or the library filling it on first access, does not make it dirty;
    /// - a page written back to its original bytes may or may not be listed.
    ///
    /// The cost grows with the pages the region has written or had filled, not with its size.
    ///
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/outOfMemory`` if the library
    ///   cannot allocate the memory it needs for the list.
    ///
    /// The C function is `cowmem_dirty_pages`.
    public func dirtyPages() throws(CowMemError) -> [Int] {
        try Engine.dirtyPages(handle).get()
    }

    /// Discards every change made to the region: its content becomes its origin again.
    ///
    /// The origin is all zeros for a region from ``init(size:)``, the source's content at the
    /// moment of the ``clone()`` for a clone, and the file's content for a region from
    /// ``init(loading:)-(FilePath)``. A region can be reset any number of times; each time it goes back
    /// to the same content. Clones made of it keep their content, its address and size stay
    /// the same, and ``dirtyPages()`` is empty afterwards.
    ///
    /// The call takes time in proportion to the pages changed, not to the region's size, and
    /// gives up the pages the region had copied for its writes. It is `mutating` because no
    /// other thread may read or write the region while it runs.
    ///
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/outOfMemory`` or
    ///   ``CowMemError/Code/outOfFileDescriptors``. A failed reset may have done part of its
    ///   work: every byte then reads as either its value before the call or its origin value,
    ///   and calling `reset()` again may complete it.
    ///
    /// The C function is `cowmem_reset`.
    public mutating func reset() throws(CowMemError) {
        try Engine.reset(handle).get()
    }

    /// Makes this region's content equal to `source`'s, in place: the copy-on-write
    /// `memcpy`.
    ///
    /// Afterwards the region holds the bytes `source` holds now, at its own address, and the
    /// two are isolated snapshots of each other, as a clone and its source are. The call
    /// costs the pages either region changed, not the size, where clones fold (`folds` in
    /// ``Backend/features``). The region's origin does not change: ``reset()`` still brings back the
    /// content it was made with. This rolls a live buffer back to any snapshot kept with
    /// ``clone()``:
    ///
    /// ```swift
    /// let saved = try world.clone()
    /// simulate(&world)                 // changes a few pages
    /// try world.assign(from: saved)    // back, in place
    /// ```
    ///
    /// It is `mutating` because no other thread may read or write the region meanwhile.
    ///
    /// - Parameter source: a region of the same size.
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/invalidSize`` if the sizes
    ///   differ (nothing changes), or ``CowMemError/Code/outOfMemory``.
    ///
    /// The C function is `cowmem_copy`.
    public mutating func assign(from source: borrowing Region) throws(CowMemError) {
        guard source.size == size else {
            throw CowMemError(
                refusing: .invalidSize, in: "Region.assign(from:)",
                because: "the source has \(source.size) bytes and this region \(size); they must be the same")
        }
        try Engine.copy(into: handle, from: source.handle).get()
    }

    /// Writes the region's content to `file` as a CowMem snapshot, which
    /// ``init(loading:)-(FileDescriptor)`` opens again.
    ///
    /// The snapshot is written from offset 0 and the file's length is set to the snapshot's:
    /// whatever the file held before is replaced. Pages that read as zero become holes, so a
    /// mostly empty region makes a sparse file. Saving reads the region without allocating
    /// anything in it and without changing its content, origin or ``dirtyPages()``.
    ///
    /// `file` must be a regular file or a memfd, open for writing and without `O_APPEND`.
    /// The call does not `fsync(2)` it. If it fails, the file may hold a partial snapshot:
    /// ``save(to:)-(FilePath)`` saves to a temporary file and renames it into place instead.
    ///
    /// For a consistent snapshot of a region that other threads keep writing through
    /// ``unsafeBaseAddress``, clone it while they are stopped and save the clone.
    ///
    /// - Parameter file: a regular file or memfd, open for writing, without `O_APPEND`.
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/unusableFileDescriptor`` if
    ///   `file` is not open for writing, not seekable, or opened with `O_APPEND`;
    ///   ``CowMemError/Code/systemError`` for the errors of `pwrite(2)` and `ftruncate(2)`
    ///   (`ENOSPC`, `EFBIG`, `EDQUOT`, `EIO`, ...), with ``CowMemError/underlyingError``
    ///   saying which.
    ///
    /// The C function is `cowmem_save`.
    public func save(to file: FileDescriptor) throws(CowMemError) {
        try Engine.save(handle, to: file.rawValue).get()
    }

    /// Opens a snapshot written by ``save(to:)-(FileDescriptor)`` as a new region with the snapshot's content
    /// and size.
    ///
    /// The call reads the snapshot's header, not its pages: with the userfaultfd backends
    /// each page is read from the file the first time a thread touches it, as a virtual
    /// machine's memory is restored lazily from a snapshot. (With the
    /// ``Backend/Kind/memfd`` backend the whole snapshot is read at once.) The file is the
    /// region's origin: ``reset()`` brings the region back to it, and ``dirtyPages()`` lists
    /// what changed since the load.
    ///
    /// Writes to the region or to its clones never reach the file. The library keeps its own
    /// duplicate of `file`, so the caller may close it at once; but the file's content must
    /// not change while the region or any clone of it exists. To replace a snapshot in use,
    /// write a new file and `rename(2)` it over the old one, as ``save(to:)-(FilePath)`` does.
    ///
    /// - Parameter file: a snapshot file open for reading; the caller may close it afterwards.
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/notASnapshot`` if the file is
    ///   not a CowMem snapshot (or was saved with another page size),
    ///   ``CowMemError/Code/unusableFileDescriptor`` if `file` is not open for reading,
    ///   ``CowMemError/Code/outOfMemory``, ``CowMemError/Code/outOfFileDescriptors``, or
    ///   ``CowMemError/Code/systemError`` (`EIO`).
    ///
    /// The C function is `cowmem_load`.
    public init(loading file: FileDescriptor) throws(CowMemError) {
        // The overlay's fault server must be claimed before the library makes any region.
        try faultServer.checkUsable()
        self.init(handle: try Engine.load(from: file.rawValue).get())
    }

    /// Figures about the region's memory and the page faults served for it, taken at the
    /// moment of the call.
    ///
    /// Counting the mapped pages walks the region's page tables: this is meant for reports
    /// and tests, not for a hot loop.
    ///
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/outOfMemory``.
    ///
    /// The C function is `cowmem_stats`.
    public var statistics: Statistics {
        get throws(CowMemError) {
            Statistics(try Engine.statistics(handle).get())
        }
    }

    /// Figures about one region, from ``Region/statistics``.
    ///
    /// `resident - shared` is the number of pages the region holds of its own: its copies and
    /// the pages it was filled with. Summed over every region of a process, that is the
    /// memory the regions hold; the shared storage is held once however many regions read it.
    ///
    /// The C type is `struct cowmem_stats`.
    public struct Statistics: Hashable, Sendable {
        /// The region's size in pages.
        public let pages: Int

        /// The pages mapped now, whether read from shared storage or the region's own; a page
        /// that reads as zero because nothing was ever written there is not counted. Zero
        /// where `/proc` is not mounted.
        public let resident: Int

        /// Of the resident pages, those read from storage the region shares with its
        /// ancestors and clones (for a loaded region, the pages read from its snapshot): they
        /// cost the region no memory of its own. Zero where `/proc` is not mounted.
        public let shared: Int

        /// The pages that may differ from the region's origin, as ``Region/dirtyPages()``
        /// counts them.
        public let written: Int

        /// The page faults the library's fault server resolved for this region since it was
        /// made: first touches of pages lent by another region, of pages of a loaded
        /// snapshot, and the like. Faults the kernel resolves on its own are not counted, and
        /// on the ``Backend/Kind/memfd`` backend there are none.
        public let faults: Int

        /// How long those faults kept threads waiting in total, from the fault server reading
        /// a fault to waking the thread that took it (QEMU's *blocktime*).
        public let blockedTime: Duration

        internal init(_ statistics: cowmem_stats) {
            pages = statistics.pages
            resident = statistics.resident
            shared = statistics.shared
            written = statistics.written
            faults = Int(clamping: statistics.faults)
            blockedTime = .nanoseconds(Int64(clamping: statistics.blocked_ns))
        }
    }
}

extension Region.Statistics: CustomStringConvertible {
    /// For example `16384 pages, 120 resident (100 shared), 20 written, 20 faults, 0.04 ms blocked`.
    public var description: String {
        let (seconds, attoseconds) = blockedTime.components
        let microseconds = seconds * 1_000_000 + attoseconds / 1_000_000_000_000
        let fraction = String(microseconds % 1000)
        return "\(pages) pages, \(resident) resident (\(shared) shared), \(written) written, "
            + "\(faults) faults, \(microseconds / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction) ms blocked"
    }
}
