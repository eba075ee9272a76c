import CCowMem

// What a buffer changed, and what its storage costs: the region calls, in a buffer's terms.

extension CowBuffer {
    /// The pages of the buffer that may differ from its origin, as page indices in ascending
    /// order: page `i` covers the bytes `i * Region.pageSize ..< (i + 1) * Region.pageSize`
    /// (the last one may end at ``count``).
    ///
    /// A buffer's *origin* is what its storage was made with:
    ///
    /// - for a copy that was then written, the content of the buffer it was copied from, at
    ///   the copy's first write (or ``makeUnique()``): this lists what the copy changed since.
    ///   That holds while the buffer it came from still exists at that write: a copy whose
    ///   source is gone already holds its storage alone and writes it in place, as an array
    ///   would, and keeps that storage's origin and list;
    /// - for a copy not written yet, the origin of the buffer it shares its storage with, and
    ///   the same list;
    /// - all zeros for a buffer made by ``init(count:)``, ``init(repeating:count:)`` or
    ///   ``init(_:)``, and the file's content for one from ``init(loading:count:)-(FilePath,_)``.
    ///
    /// ```swift
    /// history.append(current)   // keeps the state
    /// var next = current
    /// next[1_000_000] = 0
    /// try next.dirtyPages()   // [244] with 4 KiB pages: the one page the write changed
    /// ```
    ///
    /// The list follows ``Region/dirtyPages()``: every page whose bytes differ from the origin
    /// is listed, so copying the listed pages into another buffer with the same origin makes
    /// the two equal; a page only read is never listed; a page written back to its original
    /// bytes may be. An empty buffer has none.
    ///
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/outOfMemory`` if the library
    ///   cannot allocate the memory it needs for the list.
    ///
    /// The C function is `cowmem_dirty_pages`.
    public func dirtyPages() throws(CowMemError) -> [Int] {
        guard let storage else { return [] }
        let pages = try storage.region.dirtyPages()
        // A region adopted for fewer bytes than it has may have changed pages past the count.
        let pageCount = (count + Region.pageSize - 1) / Region.pageSize
        guard let last = pages.last, last >= pageCount else { return pages }
        return pages.filter { $0 < pageCount }
    }

    /// Figures about the buffer's storage and the page faults served for it, as
    /// ``Region/statistics`` reports them for its region.
    ///
    /// Copies that share their storage report the same figures. ``Region/Statistics/pages``
    /// is the storage's size in pages, the count rounded up to whole pages; an empty buffer
    /// has no storage and reports zero for everything. Like ``Region/statistics``, this walks
    /// the page tables: use it for reports and tests, not in a hot loop.
    ///
    /// - Throws: ``CowMemError`` with code ``CowMemError/Code/outOfMemory``.
    ///
    /// The C function is `cowmem_stats`.
    public var statistics: Region.Statistics {
        get throws(CowMemError) {
            guard let storage else { return Region.Statistics(cowmem_stats()) }
            return try storage.region.statistics
        }
    }
}
