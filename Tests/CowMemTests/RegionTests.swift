import CowMem
import Synchronization
import SystemPackage
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@Suite("Regions", .timeLimit(.minutes(1)), .watchdog(seconds: 90))
struct RegionTests {
    @Test("A new region is page-aligned, rounded up to whole pages, and zero-filled",
          arguments: [1, 100, pageSize - 1, pageSize, pageSize + 1, 5 * pageSize + 17])
    func create(size: Int) throws {
        let region = try Region(size: size)
        let pages = (size + pageSize - 1) / pageSize
        #expect(region.size == pages * pageSize)
        #expect(UInt(bitPattern: region.unsafeBaseAddress) % UInt(pageSize) == 0)
        let zeroes = region.withBytes { bytes in
            (0..<bytes.byteCount).allSatisfy { bytes.unsafeLoad(fromByteOffset: $0, as: UInt8.self) == 0 }
        }
        #expect(zeroes)
    }

    @Test("Writes through the span show up in the memory, and reads see them")
    func spans() throws {
        var region = try Region(size: 3 * pageSize)
        region.withMutableBytes { bytes in
            bytes.storeBytes(of: 0xDEAD_BEEF, toByteOffset: pageSize - 2, as: UInt32.self)
        }
        let word = region.withBytes { $0.unsafeLoadUnaligned(fromByteOffset: pageSize - 2, as: UInt32.self) }
        #expect(word == 0xDEAD_BEEF)
        let high = region.withUnsafeBytes { $0.load(fromByteOffset: pageSize, as: UInt8.self) }
        #expect(high == 0xAD)  // little-endian: the third byte of the word
    }

    @Test("A clone holds the source's content, and writes on either side stay on that side")
    func cloneIsolation() throws {
        let size = 8 * pageSize
        var source = try Region(size: size)
        source.withUnsafeMutableBytes { fillPattern($0, tag: 1) }
        var clone = try source.clone()
        #expect(clone.size == source.size)
        #expect(clone.unsafeBaseAddress != source.unsafeBaseAddress)
        #expect(clone.withUnsafeBytes { firstDifference($0, pattern(count: size, tag: 1)) } == nil)

        // Write pages in the clone, and other pages (and one same page) in the source.
        var cloneExpected = pattern(count: size, tag: 1)
        var sourceExpected = cloneExpected
        clone.withUnsafeMutableBytes { bytes in
            for offset in [0, 3 * pageSize + 5, 7 * pageSize - 1] {
                bytes[offset] = 0xC1
                cloneExpected[offset] = 0xC1
            }
        }
        source.withUnsafeMutableBytes { bytes in
            for offset in [pageSize, 3 * pageSize + 6, 6 * pageSize] {
                bytes[offset] = 0x5A
                sourceExpected[offset] = 0x5A
            }
        }
        #expect(clone.withUnsafeBytes { firstDifference($0, cloneExpected) } == nil)
        #expect(source.withUnsafeBytes { firstDifference($0, sourceExpected) } == nil)
    }

    @Test("A clone of a zero-filled region reads zero and writes stay private")
    func cloneOfEmpty() throws {
        let source = try Region(size: 4 * pageSize)
        var clone = try source.clone()
        clone.withUnsafeMutableBytes { $0[2 * pageSize] = 9 }
        #expect(source.withUnsafeBytes { $0.allSatisfy { $0 == 0 } })
        var expected = [UInt8](repeating: 0, count: 4 * pageSize)
        expected[2 * pageSize] = 9
        #expect(clone.withUnsafeBytes { firstDifference($0, expected) } == nil)
    }

    @Test("Clones of clones, eight deep, each keep their own snapshot; any can be destroyed first")
    func cloneChain() throws {
        let depth = 8
        let size = 12 * pageSize
        var chain: [TrackedRegion] = []
        var root = try Region(size: size)
        root.withUnsafeMutableBytes { fillPattern($0, tag: 0x40) }
        chain.append(TrackedRegion(root, expected: pattern(count: size, tag: 0x40)))

        for level in 1...depth {
            let parent = chain[level - 1]
            let child = try parent.clone()
            chain.append(child)
            // The child writes its own page; the parent writes a page after the clone, which
            // the child must not see; and every ancestor writes one more, which nobody sees.
            write(child, at: level * pageSize + level, value: UInt8(level))
            write(parent, at: (level - 1) * pageSize + 100, value: 0xA0 | UInt8(level))
            write(chain[0], at: 11 * pageSize + level, value: 0xF0 | UInt8(level))
            for (index, tracked) in chain.enumerated() {
                #expect(tracked.firstMismatch() == nil, "level \(index) after creating level \(level)")
            }
        }

        // Destroy from the middle outwards; the others keep their content.
        for index in [4, 1, 7, 0, 8, 2, 6, 3, 5] {
            try chain[index].region.take()!.destroy()
            for (other, tracked) in chain.enumerated() where tracked.region != nil {
                #expect(tracked.firstMismatch() == nil, "level \(other) after destroying level \(index)")
            }
        }
    }

    @Test("Many clones of one source are independent of each other")
    func siblings() throws {
        let size = 4 * pageSize
        var source = try Region(size: size)
        source.withUnsafeMutableBytes { fillPattern($0, tag: 7) }
        let original = TrackedRegion(source, expected: pattern(count: size, tag: 7))
        let siblings = try (0..<10).map { _ in try original.clone() }
        for (index, sibling) in siblings.enumerated() {
            write(sibling, at: (index % 4) * pageSize + index, value: UInt8(index + 1))
        }
        write(original, at: 0, value: 0xEE)
        #expect(original.firstMismatch() == nil)
        for (index, sibling) in siblings.enumerated() {
            #expect(sibling.firstMismatch() == nil, "sibling \(index)")
        }
    }

    @Test("Size 0 and negative sizes are refused with EINVAL, by Swift, in Swift's words")
    func invalidSize() {
        for size in [0, -1, Int.min] {
            let error = #expect(throws: CowMemError.self) { _ = try Region(size: size) }
            #expect(error?.code == .invalidSize, "size \(size)")
            #expect(error?.underlyingError == .invalidArgument, "size \(size)")
            #expect(error?.description == "Region(size:): invalid size: size is \(size); a region has at least one byte")
        }
    }

    @Test("A size that cannot be mapped is refused with ENOMEM or EOVERFLOW")
    func hugeSize() throws {
        for size in [Int.max, Int.max - pageSize + 2, 1 << 62, 1 << 50] {
            let error = #expect(throws: CowMemError.self) { _ = try Region(size: size) }
            #expect(error?.code == .outOfMemory, "size \(size)")
            #expect(error?.underlyingError == .noMemory || error?.underlyingError == .overflow, "size \(size)")
        }
        // Nothing changed: regions still work.
        let region = try Region(size: pageSize)
        #expect(region.size == pageSize)
    }

    @Test("An error of the C library describes itself with the C function and the errno")
    func errorDescription() {
        let error = #expect(throws: CowMemError.self) { _ = try Region(size: 1 << 50) }
        let errno = error?.underlyingError.map { "\($0)" } ?? "none"
        #expect(error?.description == "cowmem_create failed: out of memory (\(errno))")
    }

    @Test("A region can move to another thread and be used there")
    func sendToThread() throws {
        var region = try Region(size: pageSize)
        region.withUnsafeMutableBytes { $0[0] = 1 }
        let box = SendableBox(region)
        let failures = Failures()
        try onThreads(1) { _ in
            guard var region = box.take() else { return failures.record("no region") }
            region.withUnsafeMutableBytes { $0[0] += 1 }
            if region.withUnsafeBytes({ $0[0] }) != 2 { failures.record("byte is not 2") }
            do { try region.destroy() } catch { failures.record("destroy: \(error)") }
        }
        #expect(failures.all == [])
    }

    @Test("The description names the size and the address")
    func description() throws {
        let region = try Region(size: pageSize)
        #expect(region.description.hasPrefix("Region(size: \(pageSize), address: 0x"))
    }

    private func write(_ tracked: TrackedRegion, at offset: Int, value: UInt8) {
        tracked.base.storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
        tracked.expected[offset] = value
    }
}

/// Hands one noncopyable region to exactly one other thread.
final class SendableBox: Sendable {
    private let slot: Mutex<Region?>

    init(_ region: consuming Region) {
        slot = Mutex(Optional(region))
    }

    func take() -> Region? {
        slot.withLock { $0.take() }
    }
}
