import CowMem
import Testing

@Suite("CowBuffer: dirty pages and statistics", .timeLimit(.minutes(1)), .watchdog(seconds: 90))
struct CowBufferChangesTests {
    @Test("A new buffer lists the pages written into it; reading lists nothing")
    func newBuffer() throws {
        var buffer = try CowBuffer(count: 8 * pageSize)
        #expect(try buffer.dirtyPages() == [])
        _ = buffer.reduce(0, &+)
        #expect(try buffer.dirtyPages() == [])
        buffer[3 * pageSize + 17] = 1
        buffer[0] = 2
        buffer[8 * pageSize - 1] = 3
        #expect(try buffer.dirtyPages() == [0, 3, 7])
        #expect(try buffer.statistics.written == 3)
        #expect(try buffer.statistics.pages == 8)
    }

    @Test("A written copy lists what it changed since the copy; the buffer it came from keeps its own list")
    func copyAgainstItsSource() throws {
        var original = try CowBuffer(count: 16 * pageSize)
        original[2 * pageSize] = 9
        var copy = original
        // Not written yet: the copy shares the storage, and so the list.
        #expect(try copy.dirtyPages() == [2])
        #expect(try copy.statistics == original.statistics)

        copy[5 * pageSize + 1] = 7
        copy[11 * pageSize] = 7
        _ = copy[2 * pageSize]
        #expect(try copy.dirtyPages() == [5, 11])
        #expect(try original.dirtyPages() == [2])
        #expect(try copy.statistics.written == 2)

        // The contract: copying the listed pages into another copy of the same state makes
        // the two equal.
        var replay = original
        for page in try copy.dirtyPages() {
            for offset in (page * pageSize)..<((page + 1) * pageSize) { replay[offset] = copy[offset] }
        }
        #expect(Array(replay) == Array(copy))
        #expect(Array(replay) != Array(original))
    }

    @Test("A loaded buffer lists what changed since the load; pages past an adopted count are not listed")
    func loadedAndAdopted() throws {
        let file = try temporaryFile()
        defer { try? file.close() }
        try CowBuffer(repeating: 4, count: 4 * pageSize).save(to: file)
        var loaded = try CowBuffer(loading: file)
        #expect(try loaded.dirtyPages() == [])
        loaded[pageSize] = 0
        #expect(try loaded.dirtyPages() == [1])

        var region = try Region(size: 4 * pageSize)
        region.withUnsafeMutableBytes { bytes in
            bytes[0] = 1
            bytes[3 * pageSize] = 1
        }
        let adopted = CowBuffer(adopting: region, count: pageSize + 1)
        #expect(try adopted.dirtyPages() == [0])
    }

    @Test("An empty buffer has no dirty pages and zero statistics")
    func emptyBuffer() throws {
        let empty = CowBuffer()
        #expect(try empty.dirtyPages() == [])
        let statistics = try empty.statistics
        #expect(statistics.pages == 0 && statistics.resident == 0 && statistics.written == 0 && statistics.faults == 0)
    }
}
