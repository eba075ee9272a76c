import CowMem
import SystemPackage
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@Suite("Dirty pages, reset, save and load, statistics", .timeLimit(.minutes(1)), .watchdog(seconds: 90))
struct RegionSnapshotTests {
    // MARK: Dirty pages

    @Test("dirtyPages() lists exactly the pages written into a new region, ascending")
    func dirtyPagesOfNewRegion() throws {
        var region = try Region(size: 16 * pageSize)
        #expect(try region.dirtyPages() == [])
        region.withUnsafeMutableBytes { bytes in
            bytes[15 * pageSize + 7] = 1
            bytes[0] = 1
            for offset in (5 * pageSize)..<(7 * pageSize) { bytes[offset] = 2 }
        }
        #expect(try region.dirtyPages() == [0, 5, 6, 15])
        #expect(try region.statistics.written == 4)
    }

    @Test("Cloning keeps the source's list; the clone starts with none; reading dirties nothing")
    func dirtyPagesAcrossClones() throws {
        let size = 32 * pageSize
        let source = SnapshotModel(try Region(size: size), content: [UInt8](repeating: 0, count: size))
        source.write(pattern(count: 16 * pageSize, tag: 3), at: 0)
        let first = try source.clone()
        // Pages the source writes after a clone are lent to the next clone and filled on its
        // first access: filling is not writing.
        source.write(pattern(count: 4 * pageSize, tag: 4), at: 2 * pageSize)
        let second = try source.clone()
        #expect(try source.region!.dirtyPages() == Array(0..<16))
        #expect(try first.region!.dirtyPages() == [])
        #expect(try second.region!.dirtyPages() == [])
        // Read every page of both clones (the lent ones, base ones and holes).
        #expect(try first.check() == nil)
        #expect(try second.check() == nil)
        #expect(try first.region!.dirtyPages() == [])
        #expect(try second.region!.dirtyPages() == [])
        second.write([9], at: 3 * pageSize + 1)
        second.write([9], at: 30 * pageSize)
        #expect(try second.region!.dirtyPages() == [3, 30])
        #expect(try source.check() == nil)
        #expect(try source.region!.dirtyPages() == Array(0..<16))
    }

    @Test("Random writes, write-backs, clones and resets: D ⊆ dirtyPages() ⊆ written, reset gives the origin")
    func randomizedDirtyPagesAndReset() throws {
        let seed = testSeed()
        print("dirty pages and reset seed: \(seed)")
        var random = SeededGenerator(seed: seed)
        let pages = 24, size = pages * pageSize
        var models = [SnapshotModel(try Region(size: size), content: [UInt8](repeating: 0, count: size))]
        var log: [String] = []
        for step in 0..<400 {
            let index = Int.random(in: 0..<models.count, using: &random)
            let model = models[index]
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<40:
                let count = Int.random(in: 1...(2 * pageSize), using: &random)
                let offset = Int.random(in: 0...(size - count), using: &random)
                log.append("write \(count) at \(offset) into #\(index)")
                model.write((0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }, at: offset)
            case 40..<50:
                // The same bytes again, or the origin's: written, yet maybe not different.
                let page = Int.random(in: 0..<pages, using: &random)
                let range = (page * pageSize)..<((page + 1) * pageSize)
                let again = Bool.random(using: &random)
                log.append("write \(again ? "the same bytes" : "the origin's bytes") into page \(page) of #\(index)")
                model.write(Array(again ? model.content[range] : model.origin[range]), at: range.lowerBound)
            case 50..<65 where models.count < 8:
                log.append("clone #\(index) -> #\(models.count)")
                models.append(try model.clone())
            case 65..<80:
                log.append("reset #\(index)")
                try model.reset()
                if let listed = try? model.region!.dirtyPages(), !listed.isEmpty {
                    Issue.record("seed \(seed) step \(step): dirtyPages() after reset is \(listed)")
                }
            case 80..<86 where models.count > 1:
                log.append("destroy #\(index)")
                try models.remove(at: index).region.take()!.destroy()
            default:
                break
            }
            let checked = Int.random(in: 0..<models.count, using: &random)
            if let problem = try models[checked].check() {
                Issue.record("seed \(seed) step \(step), region #\(checked): \(problem); last: \(log.suffix(8))")
                return
            }
        }
        for (index, model) in models.enumerated() {
            if let problem = try model.check() {
                Issue.record("seed \(seed) at the end, region #\(index): \(problem); last: \(log.suffix(8))")
            }
        }
    }

    // MARK: Copy

    @Test("assign(from:) rolls a region back to a snapshot in place; the origin stays; sizes must match")
    func assignFromSnapshot() throws {
        let size = 16 * pageSize
        var world = try Region(size: size)
        world.withUnsafeMutableBytes { $0.copyBytes(from: pattern(count: size, tag: 7)) }
        let saved = try world.clone()
        world.withUnsafeMutableBytes { bytes in
            for offset in stride(from: 0, to: size, by: 3 * pageSize) { bytes[offset] ^= 0xff }
        }
        let base = world.withUnsafeBytes { $0.baseAddress }
        try world.assign(from: saved)
        #expect(world.withUnsafeBytes { $0.baseAddress } == base)
        #expect(world.withUnsafeBytes { Array($0) } == pattern(count: size, tag: 7))
        // Isolated afterwards, both ways.
        world.withUnsafeMutableBytes { $0[5] = 0x11 }
        #expect(saved.withUnsafeBytes { $0[5] } == pattern(count: size, tag: 7)[5])
        // The origin is still zeros: assign is no new origin.
        try world.reset()
        #expect(world.withUnsafeBytes { Array($0) } == [UInt8](repeating: 0, count: size))

        let other = try Region(size: 2 * size)
        #expect {
            try world.assign(from: other)
        } throws: { error in
            (error as? CowMemError)?.code == .invalidSize
                && "\(error)" == "Region.assign(from:): invalid size: the source has \(2 * size) bytes "
                    + "and this region \(size); they must be the same"
        }
    }

    // MARK: Reset

    @Test("reset() brings back zeros, a clone's source content, and a clone of a clone's, in place")
    func resetToOrigins() throws {
        let size = 16 * pageSize
        let created = SnapshotModel(try Region(size: size), content: [UInt8](repeating: 0, count: size))
        created.write(pattern(count: size, tag: 1), at: 0)
        let child = try created.clone()                  // origin: pattern 1
        created.write(pattern(count: 3 * pageSize, tag: 2), at: pageSize)   // the source goes on
        let grandchild = try created.clone()
        child.write(pattern(count: 2 * pageSize, tag: 3), at: 10 * pageSize)
        let childOfChild = try child.clone()             // origin: pattern 1 + child's writes
        child.write(pattern(count: 5 * pageSize, tag: 4), at: 8 * pageSize)   // the child goes on
        childOfChild.write(pattern(count: pageSize, tag: 5), at: 0)
        grandchild.write([1, 2, 3], at: 15 * pageSize)

        for model in [created, child, grandchild, childOfChild] {
            try model.reset()
            #expect(model.region!.withUnsafeBytes { $0.baseAddress } == UnsafeRawPointer(model.base))
            #expect(try model.region!.dirtyPages() == [])
            #expect(try model.check() == nil)
            // The others are untouched by one's reset.
            for other in [created, child, grandchild, childOfChild] {
                #expect(try other.check() == nil)
            }
        }
        #expect(created.content == [UInt8](repeating: 0, count: size))
        #expect(child.content == pattern(count: size, tag: 1))

        // Write and reset again: the same origin each time.
        childOfChild.write(pattern(count: size, tag: 6), at: 0)
        try childOfChild.reset()
        #expect(try childOfChild.check() == nil)
        try childOfChild.reset()
        #expect(try childOfChild.check() == nil)
    }

    @Test("A clone made before a reset keeps the content it was made with")
    func cloneSurvivesReset() throws {
        let size = 8 * pageSize
        let region = SnapshotModel(try Region(size: size), content: [UInt8](repeating: 0, count: size))
        region.write(pattern(count: size, tag: 7), at: 0)
        let before = try region.clone()
        try region.reset()
        #expect(try before.check() == nil)
        #expect(try region.check() == nil)
        #expect(region.content == [UInt8](repeating: 0, count: size))
    }

    // MARK: Save and load

    @Test("save(to:) then Region(loading:) gives the same bytes; the loaded region and its clones never write the file")
    func saveAndLoad() throws {
        let size = 40 * pageSize + 0  // holes and data, the last page written
        var source = try Region(size: size)
        var expected = [UInt8](repeating: 0, count: size)
        for page in [0, 1, 7, 20, 21, 22, 39] {
            let bytes = pattern(count: pageSize, tag: UInt8(page))
            source.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: page * pageSize).copyMemory(from: bytes, byteCount: pageSize) }
            expected.replaceSubrange((page * pageSize)..<((page + 1) * pageSize), with: bytes)
        }
        let file = try temporaryFile()
        defer { try? file.close() }
        try source.save(to: file)
        let saved = try contents(of: file)
        #expect(!saved.isEmpty)
        try source.destroy()

        var loaded = try Region(loading: file)
        #expect(loaded.size == size)
        #expect(try loaded.dirtyPages() == [])
        #expect(loaded.withUnsafeBytes { firstDifference($0, expected) } == nil)

        // Write the loaded region and a clone of it: the file does not change.
        var clone = try loaded.clone()
        loaded.withUnsafeMutableBytes { fillPattern(UnsafeMutableRawBufferPointer(rebasing: $0[(5 * pageSize)..<(25 * pageSize)]), tag: 0xE1) }
        clone.withUnsafeMutableBytes { fillPattern($0, tag: 0xE2) }
        #expect(try contents(of: file) == saved)
        #expect(try loaded.dirtyPages() == Array(5..<25))

        // The file is the loaded region's origin.
        try loaded.reset()
        #expect(loaded.withUnsafeBytes { firstDifference($0, expected) } == nil)
        #expect(try contents(of: file) == saved)
        #expect(clone.withUnsafeBytes { firstDifference($0, pattern(count: size, tag: 0xE2)) } == nil)

        // A second load of the same file still reads what was saved.
        let again = try Region(loading: file)
        #expect(again.withUnsafeBytes { firstDifference($0, expected) } == nil)
    }

    @Test("The loaded region keeps working after the caller closes its descriptor")
    func loadThenClose() throws {
        let size = 8 * pageSize
        var source = try Region(size: size)
        source.withUnsafeMutableBytes { fillPattern($0, tag: 0x42) }
        let file = try temporaryFile()
        try source.save(to: file)
        let loaded = try Region(loading: file)
        try file.close()
        #expect(loaded.withUnsafeBytes { firstDifference($0, pattern(count: size, tag: 0x42)) } == nil)
    }

    @Test("Saving replaces a longer file's content and length, and reads without allocating")
    func saveReplacesAndAllocatesNothing() throws {
        let size = 16 * pageSize
        var populated = try Region(size: size)
        populated.withUnsafeMutableBytes { fillPattern($0, tag: 0x11) }
        let clone = try populated.clone()

        let fresh = try temporaryFile(), reused = try temporaryFile()
        defer { try? fresh.close(); try? reused.close() }
        _ = try reused.writeAll([UInt8](repeating: 0xAA, count: 64 * pageSize + 123))

        let before = try clone.statistics
        try clone.save(to: fresh)
        try clone.save(to: reused)
        let after = try clone.statistics
        #expect(after.resident == before.resident, "saving mapped pages into the region")
        #expect(try clone.dirtyPages() == [])
        #expect(try contents(of: reused) == contents(of: fresh))
        let loaded = try Region(loading: reused)
        #expect(loaded.withUnsafeBytes { firstDifference($0, pattern(count: size, tag: 0x11)) } == nil)
    }

    @Test("Saving a clone whose pages are lent or not filled yet writes their content and fills nothing")
    func saveUnfilledClone() throws {
        let size = 24 * pageSize
        var source = try Region(size: size)
        source.withUnsafeMutableBytes { fillPattern(UnsafeMutableRawBufferPointer(rebasing: $0[..<(12 * pageSize)]), tag: 0x31) }
        let first = try source.clone()
        source.withUnsafeMutableBytes { fillPattern(UnsafeMutableRawBufferPointer(rebasing: $0[(4 * pageSize)..<(8 * pageSize)]), tag: 0x32) }
        let clone = try source.clone()        // base pages, lent pages and holes, none touched
        source.withUnsafeMutableBytes { fillPattern($0, tag: 0x33) }   // the source moves on
        var expected = [UInt8](repeating: 0, count: size)
        expected.replaceSubrange(0..<(12 * pageSize), with: pattern(count: 12 * pageSize, tag: 0x31))
        expected.replaceSubrange((4 * pageSize)..<(8 * pageSize), with: pattern(count: 4 * pageSize, tag: 0x32))

        let before = try clone.statistics
        let file = try temporaryFile()
        defer { try? file.close() }
        try clone.save(to: file)
        let after = try clone.statistics
        #expect(after.resident == before.resident, "before \(before), after \(after)")
        #expect(try clone.dirtyPages() == [])
        let loaded = try Region(loading: file)
        #expect(loaded.withUnsafeBytes { firstDifference($0, expected) } == nil)
        #expect(clone.withUnsafeBytes { firstDifference($0, expected) } == nil)
        #expect(first.withUnsafeBytes { firstDifference($0, Array(expected[..<(4 * pageSize)]) + pattern(count: 12 * pageSize, tag: 0x31)[(4 * pageSize)...] + [UInt8](repeating: 0, count: 12 * pageSize)) } == nil)
    }

    @Test("A mostly empty region makes a sparse snapshot on tmpfs")
    func sparseSnapshot() throws {
        let size = 256 * pageSize
        var region = try Region(size: size)
        region.withUnsafeMutableBytes { $0[100 * pageSize] = 1 }
        // tmpfs, where holes are certain (the snapshot's own holes are what is checked).
        let file = try temporaryFile(in: "/dev/shm")
        let descriptor = file.rawValue
        defer { try? file.close() }
        try region.save(to: file)
        var status = stat()
        try #require(fstat(descriptor, &status) == 0)
        #expect(Int(status.st_size) >= size)
        #expect(Int(status.st_blocks) * 512 <= 8 * pageSize, "\(status.st_blocks) blocks for one written page")
        let loaded = try Region(loading: file)
        var expected = [UInt8](repeating: 0, count: size)
        expected[100 * pageSize] = 1
        #expect(loaded.withUnsafeBytes { firstDifference($0, expected) } == nil)
    }

    @Test("Files that are not snapshots are refused as such")
    func loadRefusesOtherFiles() throws {
        let empty = try temporaryFile()
        defer { try? empty.close() }
        let error = #expect(throws: CowMemError.self) { _ = try Region(loading: empty) }
        #expect(error?.code == .notASnapshot)
        #expect(error?.underlyingError == .invalidArgument)

        let garbage = try temporaryFile()
        defer { try? garbage.close() }
        _ = try garbage.writeAll(pattern(count: 3 * pageSize, tag: 0x99))
        #expect(throws: CowMemError.self) { _ = try Region(loading: garbage) }

        // A real snapshot cut short.
        var region = try Region(size: 8 * pageSize)
        region.withUnsafeMutableBytes { fillPattern($0, tag: 1) }
        let truncated = try temporaryFile()
        defer { try? truncated.close() }
        try region.save(to: truncated)
        let length = try contents(of: truncated).count
        try truncated.resize(to: Int64(length - pageSize))
        let cut = #expect(throws: CowMemError.self) { _ = try Region(loading: truncated) }
        #expect(cut?.code == .notASnapshot)
    }

    @Test("Descriptors that cannot take a snapshot are refused, and nothing changes")
    func unusableDescriptors() throws {
        var region = try Region(size: 2 * pageSize)
        region.withUnsafeMutableBytes { $0[1] = 1 }
        let file = try temporaryFile()
        defer { try? file.close() }

        var pipeEnds: [CInt] = [-1, -1]
        try #require(pipe(&pipeEnds) == 0)
        defer { pipeEnds.forEach { _ = close($0) } }
        let pipeError = #expect(throws: CowMemError.self) { try region.save(to: FileDescriptor(rawValue: pipeEnds[1])) }
        #expect(pipeError?.code == .unusableFileDescriptor)
        #expect(pipeError?.underlyingError == .illegalSeek)

        let appending = try reopen(file, flags: O_WRONLY | O_APPEND)
        defer { try? appending.close() }
        let appendError = #expect(throws: CowMemError.self) { try region.save(to: appending) }
        #expect(appendError?.code == .unusableFileDescriptor)
        #expect(appendError?.underlyingError == .invalidArgument)

        let readOnly = try reopen(file, flags: O_RDONLY)
        defer { try? readOnly.close() }
        let readOnlyError = #expect(throws: CowMemError.self) { try region.save(to: readOnly) }
        #expect(readOnlyError?.code == .unusableFileDescriptor)
        #expect(readOnlyError?.underlyingError == .badFileDescriptor)

        try region.save(to: file)
        let writeOnly = try reopen(file, flags: O_WRONLY)
        defer { try? writeOnly.close() }
        let loadError = #expect(throws: CowMemError.self) { _ = try Region(loading: writeOnly) }
        #expect(loadError?.code == .unusableFileDescriptor)
        #expect(loadError?.underlyingError == .badFileDescriptor)

        #expect(try region.dirtyPages() == [0])
        #expect(region.withUnsafeBytes { $0[1] } == 1)
    }

    // MARK: Statistics

    @Test("Statistics: pages, written as dirtyPages() counts, resident and shared pages of a clone")
    func statistics() throws {
        let pages = 32, size = pages * pageSize
        var source = try Region(size: size)
        source.withUnsafeMutableBytes { fillPattern($0, tag: 0x5A) }   // every page in its memfd
        var stats = try source.statistics
        #expect(stats.pages == pages)
        #expect(stats.written == pages)
        #expect(stats.written == (try source.dirtyPages().count))

        var clone = try source.clone()
        #expect(clone.withUnsafeBytes { firstDifference($0, pattern(count: size, tag: 0x5A)) } == nil)
        stats = try clone.statistics
        #expect(stats.pages == pages)
        #expect(stats.written == 0)
        #expect(stats.resident == pages, "\(stats)")
        #expect(stats.shared == pages, "\(stats)")

        clone.withUnsafeMutableBytes { bytes in
            for page in [1, 2, 30] { bytes[page * pageSize + 5] ^= 0xFF }
        }
        stats = try clone.statistics
        #expect(stats.written == 3)
        #expect(stats.written == (try clone.dirtyPages().count))
        #expect(stats.resident == pages, "\(stats)")
        #expect(stats.shared == pages - 3, "\(stats)")
        #expect(stats.blockedTime >= .zero)
    }

    @Test("Faults served for a region are counted: lent pages and holes of a clone, pages of a loaded snapshot")
    func faultCounts() throws {
        let size = 32 * pageSize, half = 16 * pageSize
        var source = try Region(size: size)
        source.withUnsafeMutableBytes { fillPattern(UnsafeMutableRawBufferPointer(rebasing: $0[..<half]), tag: 1) }
        let first = try source.clone()
        source.withUnsafeMutableBytes { fillPattern(UnsafeMutableRawBufferPointer(rebasing: $0[..<(8 * pageSize)]), tag: 2) }
        // Waits for the 8 pages the source wrote after `first` (where the backend lends them
        // rather than copying them at once), and has 16 never-written pages (holes): the
        // fault server fills both kinds on first access.
        let second = try source.clone()
        let before = try second.statistics
        var expected = [UInt8](repeating: 0, count: size)
        expected.replaceSubrange(0..<half, with: pattern(count: half, tag: 1))
        expected.replaceSubrange(0..<(8 * pageSize), with: pattern(count: 8 * pageSize, tag: 2))
        #expect(second.withUnsafeBytes { firstDifference($0, expected) } == nil)
        let after = try second.statistics

        let file = try temporaryFile()
        defer { try? file.close() }
        try first.save(to: file)
        let loaded = try Region(loading: file)
        let loadedBefore = try loaded.statistics
        var firstExpected = [UInt8](repeating: 0, count: size)
        firstExpected.replaceSubrange(0..<half, with: pattern(count: half, tag: 1))
        #expect(loaded.withUnsafeBytes { firstDifference($0, firstExpected) } == nil)
        let loadedAfter = try loaded.statistics

        if backendKind == .memfd {
            // No fault server: nothing is ever counted.
            #expect(after.faults == 0 && loadedAfter.faults == 0)
            #expect(after.blockedTime == .zero && loadedAfter.blockedTime == .zero)
        } else {
            #expect(after.faults > before.faults, "before \(before), after \(after)")
            #expect(loadedAfter.faults > loadedBefore.faults, "before \(loadedBefore), after \(loadedAfter)")
            #expect(after.blockedTime >= before.blockedTime)
            #expect(loadedAfter.shared > 0, "\(loadedAfter)")
        }
        #expect(after.written == 0 && loadedAfter.written == 0)
    }
}
