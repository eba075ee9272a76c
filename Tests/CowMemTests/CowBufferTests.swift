@testable import CowMem
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@Suite("CowBuffer against [UInt8]", .timeLimit(.minutes(1)), .watchdog(seconds: 90))
struct CowBufferTests {
    @Test("Random copies, copies of copies, writes and comparisons behave exactly like [UInt8]")
    func randomizedAgainstArrays() throws {
        let seed = testSeed()
        print("CowBuffer randomized seed: \(seed)")
        var random = SeededGenerator(seed: seed)
        // Two families of different counts, neither a whole number of pages.
        let counts = [5 * pageSize + 123, 3 * pageSize - 1]
        var buffers = [try CowBuffer(count: counts[0]), try CowBuffer(pattern(count: counts[1], tag: 9))]
        var models = [[UInt8](repeating: 0, count: counts[0]), pattern(count: counts[1], tag: 9)]
        var log: [String] = []
        for step in 0..<2500 {
            let i = Int.random(in: 0..<buffers.count, using: &random)
            let count = models[i].count
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<15 where buffers.count < 10:
                log.append("copy #\(i) -> #\(buffers.count)")
                buffers.append(buffers[i])
                models.append(models[i])
            case 15..<22:
                let j = Int.random(in: 0..<buffers.count, using: &random)
                log.append("#\(i) = #\(j)")
                buffers[i] = buffers[j]
                models[i] = models[j]
            case 22..<27 where buffers.count > 2:
                log.append("drop #\(i)")
                buffers.remove(at: i)
                models.remove(at: i)
            case 27..<55:
                let offset = Int.random(in: 0..<count, using: &random)
                let value = UInt8.random(in: 0...255, using: &random)
                log.append("#\(i)[\(offset)] = \(value)")
                buffers[i][offset] = value
                models[i][offset] = value
            case 55..<62:
                // Put back the byte of a copy, so that equal buffers with written pages occur.
                let j = Int.random(in: 0..<buffers.count, using: &random)
                guard models[j].count == count else { break }
                let offset = Int.random(in: 0..<count, using: &random)
                log.append("#\(i)[\(offset)] = #\(j)[\(offset)]")
                buffers[i][offset] = buffers[j][offset]
                models[i][offset] = models[j][offset]
            case 62..<72:
                let length = Int.random(in: 1...min(count, 2 * pageSize), using: &random)
                let offset = Int.random(in: 0...(count - length), using: &random)
                let tag = UInt8.random(in: 0...255, using: &random)
                log.append("fill \(length) bytes of #\(i) at \(offset) with tag \(tag)")
                buffers[i].withUnsafeMutableBytes { bytes in
                    fillPattern(UnsafeMutableRawBufferPointer(rebasing: bytes[offset..<(offset + length)]), tag: tag)
                }
                models[i].replaceSubrange(offset..<(offset + length), with: pattern(count: length, tag: tag))
            case 72..<78:
                let offset = Int.random(in: 0...(count - 8), using: &random)
                let value = random.next()
                log.append("span store of 8 bytes into #\(i) at \(offset)")
                buffers[i].withMutableBytes { $0.storeBytes(of: value, toByteOffset: offset, as: UInt64.self) }
                withUnsafeBytes(of: value) { models[i].replaceSubrange(offset..<(offset + 8), with: $0) }
            case 78..<82:
                let a = Int.random(in: 0..<count, using: &random), b = Int.random(in: 0..<count, using: &random)
                log.append("#\(i).swapAt(\(a), \(b))")
                buffers[i].swapAt(a, b)
                models[i].swapAt(a, b)
            default:
                break
            }
            // Compare a random pair, and check one buffer's bytes.
            let a = Int.random(in: 0..<buffers.count, using: &random)
            let b = Int.random(in: 0..<buffers.count, using: &random)
            if (buffers[a] == buffers[b]) != (models[a] == models[b]) || (buffers[b] == buffers[a]) != (models[a] == models[b]) {
                Issue.record("seed \(seed) step \(step): #\(a) == #\(b) is \(buffers[a] == buffers[b]), the arrays say \(models[a] == models[b]); last: \(log.suffix(8))")
                return
            }
            let checked = Int.random(in: 0..<buffers.count, using: &random)
            if buffers[checked].count != models[checked].count
                || buffers[checked].withUnsafeBytes({ firstDifference($0, models[checked]) }) != nil {
                Issue.record("seed \(seed) step \(step): #\(checked) differs from its array; last: \(log.suffix(8))")
                return
            }
        }
        for (index, buffer) in buffers.enumerated() {
            #expect(Array(buffer) == models[index], "seed \(seed): #\(index) at the end")
        }
    }

    @Test("The first write after a copy, on either side, leaves the other side as it was")
    func copiesAreIndependent() throws {
        let count = 4 * pageSize
        var a = try CowBuffer(pattern(count: count, tag: 1))
        var b = a
        a[10] = 0xEE                        // the original writes first
        #expect(b[10] == pattern(count: count, tag: 1)[10])
        #expect(a[10] == 0xEE)
        var c = b
        c[3 * pageSize] = 0xCC              // the copy writes first
        #expect(b[3 * pageSize] == pattern(count: count, tag: 1)[3 * pageSize])
        b[0] = 0xBB
        #expect(Array(a) == { var model = pattern(count: count, tag: 1); model[10] = 0xEE; return model }())
        #expect(Array(b) == { var model = pattern(count: count, tag: 1); model[0] = 0xBB; return model }())
        #expect(Array(c) == { var model = pattern(count: count, tag: 1); model[3 * pageSize] = 0xCC; return model }())
        c = a                               // assignment shares again
        #expect(c.storage === a.storage)
    }

    @Test("The first write after a copy copies only the page it touches")
    func firstWriteCopiesOnePage() throws {
        let count = 16 << 20
        let original = try CowBuffer(repeating: 7, count: count)
        var copy = original
        copy[count / 2] = 8
        let statistics = try copy.storage!.region.statistics
        #expect(statistics.written == 1, "\(statistics)")
        #expect(statistics.resident - statistics.shared <= 1, "\(statistics)")
        #expect(original[count / 2] == 7 && copy[count / 2] == 8)
        #expect(original != copy)
    }

    @Test("Equality takes the short ways: shared storage, a clone's dirty pages, siblings' dirty pages")
    func equalityFastPaths() throws {
        let count = 8 * pageSize + 100
        let a = try CowBuffer(pattern(count: count, tag: 3))
        var b = a
        #expect(CowBuffer.compare(a, b) == (true, .sameStorage))

        // b was cloned from a, which has not changed since: only b's written page is compared.
        b[5 * pageSize + 1] ^= 0xFF
        #expect(CowBuffer.compare(a, b) == (false, .pages(1)))
        #expect(CowBuffer.compare(b, a) == (false, .pages(1)))
        b[5 * pageSize + 1] ^= 0xFF         // written back: equal, the page may or may not be listed
        let writtenBack = CowBuffer.compare(a, b)
        #expect(writtenBack.equal)
        #expect(writtenBack.path == .pages(1) || writtenBack.path == .pages(0))

        // Two copies of one unchanged state, each written: the union of their pages.
        var c = a, d = a
        c[0] = 1
        d[8 * pageSize + 99] = 1            // the last, partial page
        #expect(CowBuffer.compare(c, d) == (false, .pages(2)))

        // makeUnique() clones without writing: nothing to compare.
        var e = a
        try e.makeUnique()
        #expect(e.storage !== a.storage)
        #expect(CowBuffer.compare(a, e) == (true, .pages(0)))
        try e.makeUnique()                   // already its own: no new clone
        #expect(CowBuffer.compare(a, e) == (true, .pages(0)))

        // Buffers of separate histories are compared byte by byte, and still correctly.
        let f = try CowBuffer(pattern(count: count, tag: 3))
        #expect(CowBuffer.compare(a, f) == (true, .everything))
        #expect(CowBuffer.compare(a, try CowBuffer(count: count + 1)) == (false, .counts))
    }

    @Test("After the source writes too, equality no longer trusts the clone's list and compares everything")
    func equalityAfterBothSidesWrite() throws {
        let count = 4 * pageSize
        var a = try CowBuffer(pattern(count: count, tag: 4))
        var b = a
        b[0] = 0                              // b clones; a keeps the storage b came from
        a[2 * pageSize] ^= 1                  // a writes it in place: b's origin is gone
        #expect(CowBuffer.compare(a, b).path == .everything)
        #expect(a != b)
        a[2 * pageSize] ^= 1
        a[0] = 0
        #expect(CowBuffer.compare(a, b) == (true, .everything))
    }

    @Test("Only the first write after a clone was made from the storage moves it to a new generation")
    func generationsCountTransitionsNotWrites() throws {
        let count = 2 * pageSize
        var a = try CowBuffer(count: count)
        for offset in 0..<count { a[offset] = UInt8(truncatingIfNeeded: offset) }
        #expect(a.storage!.generation == 0 && !a.storage!.isLent)   // nothing was cloned from it
        var b = a
        b[1] = 0                              // b clones a's storage: a is lent
        #expect(a.storage!.isLent && !b.storage!.isLent)
        #expect(CowBuffer.compare(a, b) == (false, .pages(1)))
        for offset in 0..<count { a[offset] ^= 0x5A }
        #expect(a.storage!.generation == 1 && !a.storage!.isLent)   // one transition, not count writes
        #expect(CowBuffer.compare(a, b).path == .everything)        // b's origin is gone
        var model = (0..<count).map { UInt8(truncatingIfNeeded: $0) ^ 0x5A }
        #expect(Array(a) == model)
        model = (0..<count).map { UInt8(truncatingIfNeeded: $0) }
        model[1] = 0
        #expect(Array(b) == model)
    }

    @Test("A lent storage stays not unique while its clone exists, and makeUnique does not clone it for that")
    func lentStorageIsHeldByItsClone() throws {
        var a = try CowBuffer(repeating: 3, count: 2 * pageSize)
        let original = ObjectIdentifier(a.storage!)   // not a reference: that would share it
        var b = a
        b[0] = 0                              // b clones: its lease holds a's storage
        #expect(a.storage!.isLent)
        try a.makeUnique()                    // only b's lease holds it besides a: no clone
        #expect(ObjectIdentifier(a.storage!) == original)
        #expect(a.storage!.isLent && a.storage!.generation == 0)
        a[1] = 1                              // the write drops the lease's hold, moves on
        #expect(ObjectIdentifier(a.storage!) == original)
        #expect(!a.storage!.isLent && a.storage!.generation == 1)
        var c = a
        c[2] = 2
        #expect(a.storage!.isLent)
        c = CowBuffer()                       // the only clone of this generation goes
        #expect(!a.storage!.isLent)
        a[3] = 3                              // nothing to tell: no new generation
        #expect(ObjectIdentifier(a.storage!) == original && a.storage!.generation == 1)
        #expect(Array(a.prefix(4)) == [3, 1, 3, 3] && Array(b.prefix(4)) == [0, 3, 3, 3])
        #expect(c.isEmpty)
    }

    @Test("Storages that only their clones hold go at the next clone, the whole chain of an undo history")
    func orphanedSourcesAreLetGo() throws {
        // An undo history, each state cloned from the one before: every clone holds its
        // source while that source is lent. Dropped at once, the history is held only by
        // those leases, and goes at the image's next clone, on the thread that makes it.
        let failures = Failures()
        try onThreads(1) { _ in
            do {
                var image = try CowBuffer(count: 2 * pageSize)
                var history: [CowBuffer] = []
                weak var oldest = image.storage
                for edit in 0..<200 {
                    history.append(image)
                    image[edit % (2 * pageSize)] = UInt8(truncatingIfNeeded: edit)
                }
                weak var newest = history.last!.storage
                history = []
                if oldest == nil || newest == nil { failures.record("dropped before the next clone") }
                var next = image
                next[0] ^= 1
                if oldest != nil || newest != nil { failures.record("kept after the next clone") }
                if next == image { failures.record("the clone is equal to the image") }
            } catch {
                failures.record("\(error)")
            }
        }
        #expect(failures.all.isEmpty, "\(failures.all)")
    }

    @Test("The count is fixed and exact; the storage is rounded up to whole pages")
    func countAndRounding() throws {
        let count = 3 * pageSize + 5
        var buffer = try CowBuffer(count: count)
        #expect(buffer.count == count)
        #expect(buffer.storage!.region.size == 4 * pageSize)
        #expect(buffer.withUnsafeBytes { $0.count } == count)
        #expect(buffer.withBytes { $0.byteCount } == count)
        buffer[count - 1] = 1
        #expect(buffer.indices == 0..<count)
        #expect(buffer.last == 1)
        let copy = buffer
        buffer.withMutableBytes { $0.storeBytes(of: 2, toByteOffset: count - 1, as: UInt8.self) }
        #expect(copy.last == 1 && buffer.last == 2)
        #expect(buffer.description == "CowBuffer(count: \(count))")
    }

    @Test("The zero-size rule: every buffer of zero bytes is the empty one, and a region of zero is refused")
    func zeroSizes() throws {
        let empties = [CowBuffer(), try CowBuffer(count: 0), try CowBuffer(repeating: 9, count: 0),
                       try CowBuffer([UInt8]()), try CowBuffer(AnySequence([UInt8]())),
                       CowBuffer(adopting: try Region(size: pageSize), count: 0)]
        for (index, empty) in empties.enumerated() {
            #expect(empty.isEmpty && empty.storage == nil && Array(empty) == [], "#\(index)")
            #expect(empty == CowBuffer() && empty.hashValue == CowBuffer().hashValue, "#\(index)")
        }
        let region = #expect(throws: CowMemError.self) { _ = try Region(size: 0) }
        #expect(region?.code == .invalidSize)
        for count in [-1, Int.min] {
            let error = #expect(throws: CowMemError.self) { _ = try CowBuffer(count: count) }
            #expect(error?.code == .invalidSize && error?.underlyingError == .invalidArgument)
            #expect(error?.description == "CowBuffer(count:): invalid size: count is \(count); a buffer's count cannot be negative")
            let repeating = #expect(throws: CowMemError.self) { _ = try CowBuffer(repeating: 1, count: count) }
            #expect(repeating?.code == .invalidSize)
        }
    }

    @Test("Empty buffers have no region and are equal to each other")
    func emptyBuffers() throws {
        var empty = CowBuffer()
        #expect(empty.isEmpty && empty.storage == nil)
        #expect(empty == (try CowBuffer(count: 0)))
        #expect(empty == (try CowBuffer([UInt8]())))
        #expect(empty.withUnsafeMutableBytes { $0.count } == 0)
        #expect(empty.withBytes { $0.byteCount } == 0)
        try empty.makeUnique()
        #expect(Array(empty) == [])
        let negative = #expect(throws: CowMemError.self) { _ = try CowBuffer(count: -1) }
        #expect(negative?.code == .invalidSize)
    }

    @Test("A loaded or existing region can become a buffer; adopting it for zero bytes makes an empty one")
    func bufferFromRegion() throws {
        var region = try Region(size: 2 * pageSize)
        region.withUnsafeMutableBytes { fillPattern($0, tag: 8) }
        var buffer = CowBuffer(adopting: region, count: pageSize + 1)
        #expect(Array(buffer) == Array(pattern(count: 2 * pageSize, tag: 8).prefix(pageSize + 1)))
        let copy = buffer
        buffer[pageSize] = 0
        #expect(copy[pageSize] == pattern(count: 2 * pageSize, tag: 8)[pageSize])

        let whole = CowBuffer(adopting: try Region(size: pageSize))
        #expect(whole.count == pageSize && whole.allSatisfy { $0 == 0 })
        let empty = CowBuffer(adopting: try Region(size: pageSize), count: 0)
        #expect(empty.isEmpty && empty.storage == nil && empty == CowBuffer())
    }

    @Test("Adopting a region for more bytes than it has, or fewer than zero, traps")
    func adoptingOutsideTheRegionTraps() async {
        await #expect(processExitsWith: .failure) {
            _ = CowBuffer(adopting: try Region(size: 4096), count: 1 << 20)
        }
        await #expect(processExitsWith: .failure) {
            _ = CowBuffer(adopting: try Region(size: 4096), count: -1)
        }
    }

    @Test("Any sequence of bytes makes a buffer with its bytes, contiguous or not")
    func fromSequences() throws {
        let model = (0..<(2 * pageSize + 77)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 5) }
        let lazy = try CowBuffer((0..<100).lazy.map { UInt8($0) })
        #expect(Array(lazy) == (0..<100).map { UInt8($0) })
        #expect(Array(try CowBuffer(model)) == model)
        #expect(Array(try CowBuffer(model[10..<(pageSize + 20)])) == Array(model[10..<(pageSize + 20)]))
        #expect(Array(try CowBuffer(model.lazy.map { $0 ^ 0xFF })) == model.map { $0 ^ 0xFF })
        var iterator = model.makeIterator()
        let unknownLength = AnySequence { AnyIterator { iterator.next() } }   // a one-pass sequence
        #expect(Array(try CowBuffer(unknownLength)) == model)
        #expect(try CowBuffer(EmptyCollection<UInt8>()) == CowBuffer())
        #expect(try CowBuffer(AnySequence(EmptyCollection<UInt8>())).storage == nil)
        let other = try CowBuffer(model)
        #expect(Array(try CowBuffer(other)) == model)     // a buffer is a sequence of bytes too
    }

    @Test("Hashing agrees with == for copies, written-back copies, separate histories and counts")
    func hashingAgreesWithEquality() throws {
        let seed = testSeed()
        var random = SeededGenerator(seed: seed)
        let count = 3 * pageSize + 9
        let base = try CowBuffer(pattern(count: count, tag: 6))
        var buffers = [base, base, try CowBuffer(pattern(count: count, tag: 6)), try CowBuffer(count: count),
                       try CowBuffer(count: count + 1), CowBuffer(), try CowBuffer([0]), try CowBuffer([0, 0])]
        var models = [pattern(count: count, tag: 6), pattern(count: count, tag: 6), pattern(count: count, tag: 6),
                      [UInt8](repeating: 0, count: count), [UInt8](repeating: 0, count: count + 1), [], [0], [0, 0]]
        for _ in 0..<40 {
            let i = Int.random(in: 0..<buffers.count, using: &random)
            guard models[i].count > 0 else { continue }
            let offset = Int.random(in: 0..<models[i].count, using: &random)
            let value: UInt8 = Bool.random(using: &random) ? models[i][offset] : UInt8.random(in: 0...3, using: &random)
            buffers.append(buffers[i])
            models.append(models[i])
            buffers[buffers.count - 1][offset] = value
            models[models.count - 1][offset] = value
        }
        for a in buffers.indices {
            for b in buffers.indices where buffers[a] == buffers[b] {
                #expect(buffers[a].hashValue == buffers[b].hashValue, "seed \(seed): #\(a) and #\(b)")
            }
        }
        #expect(Set(buffers).count == Set(models).count, "seed \(seed)")
        #expect(Set(buffers.map(Array.init)) == Set(models), "seed \(seed)")
    }

    @Test("Buffer pointers and spans read the bytes, and write them like the array's, leaving copies alone")
    func pointersAndSpans() throws {
        let count = 2 * pageSize + 3
        var model = pattern(count: count, tag: 11)
        var buffer = try CowBuffer(model)
        let copy = buffer
        #expect(buffer.withUnsafeBufferPointer { Array($0) } == model)
        buffer.withUnsafeMutableBufferPointer { elements in
            for index in stride(from: 0, to: elements.count, by: 1000) { elements[index] &+= 1 }
        }
        model.withUnsafeMutableBufferPointer { elements in
            for index in stride(from: 0, to: elements.count, by: 1000) { elements[index] &+= 1 }
        }
        #expect(Array(buffer) == model)
        #expect(Array(copy) == pattern(count: count, tag: 11))
        #expect(buffer.withSpan { $0[3] } == model[3])
        #expect(buffer.withSpan { span in span.indices.map { span[$0] } } == model)
        var second = buffer
        second.withMutableSpan { span in
            for index in span.indices { span[index] ^= UInt8(truncatingIfNeeded: index) }
        }
        #expect(Array(second) == model.enumerated().map { $0.element ^ UInt8(truncatingIfNeeded: $0.offset) })
        #expect(Array(buffer) == model)
        var empty = CowBuffer()
        #expect(empty.withUnsafeBufferPointer { $0.baseAddress == nil && $0.isEmpty })
        #expect(empty.withUnsafeMutableBufferPointer { $0.count } == 0)
        #expect(empty.withSpan { $0.count } == 0)
        #expect(empty.withMutableSpan { $0.count } == 0)
    }

    @Test("Replacing the pointer given to withUnsafeMutableBufferPointer traps, as with an array")
    func replacingTheBufferPointerTraps() async {
        await #expect(processExitsWith: .failure) {
            var buffer = try CowBuffer(count: 10)
            buffer.withUnsafeMutableBufferPointer { $0 = UnsafeMutableBufferPointer(rebasing: $0[1...]) }
        }
    }

    @Test("Reading or writing past the end traps, as with an array")
    func outOfBoundsTraps() async {
        await #expect(processExitsWith: .failure) {
            let buffer = try CowBuffer(count: 10)
            _ = buffer[10]
        }
        await #expect(processExitsWith: .failure) {
            var buffer = try CowBuffer(count: 10)
            buffer[-1] = 0
        }
    }

    @Test("Copies sent to concurrent tasks are written and checked there, and the original never changes")
    func concurrentCopies() async throws {
        let seed = testSeed()
        print("CowBuffer concurrent seed: \(seed) (task i uses seed + i)")
        let count = 64 * pageSize
        let original = try CowBuffer(pattern(count: count, tag: 0x2C))
        let originalBytes = pattern(count: count, tag: 0x2C)
        let results = try await withThrowingTaskGroup(of: (Int, CowBuffer, [UInt8]).self) { group in
            for task in 0..<4 {
                group.addTask {
                    var random = SeededGenerator(seed: seed &+ UInt64(task))
                    var mine = original          // a copy, made on this task
                    var model = originalBytes
                    for round in 0..<200 {
                        let offset = Int.random(in: 0..<count, using: &random)
                        let value = UInt8.random(in: 0...255, using: &random)
                        mine[offset] = value
                        model[offset] = value
                        if round % 50 == 0 {
                            var again = mine        // a copy of a copy, written on the side
                            again[0] &+= 1
                            if Array(mine) != model || again == mine {
                                throw TestFailure("task \(task) round \(round): the copy differs from its array")
                            }
                        }
                        if original[offset] != originalBytes[offset] {
                            throw TestFailure("task \(task) round \(round): the original changed")
                        }
                    }
                    if (mine == original) != (model == originalBytes) {
                        throw TestFailure("task \(task): equality with the original is wrong")
                    }
                    return (task, mine, model)
                }
            }
            var results: [(Int, CowBuffer, [UInt8])] = []
            for try await result in group { results.append(result) }
            return results
        }
        #expect(results.count == 4)
        for (task, buffer, model) in results {
            #expect(Array(buffer) == model, "task \(task)")
            for (other, otherBuffer, otherModel) in results {
                #expect((buffer == otherBuffer) == (model == otherModel), "tasks \(task) and \(other)")
            }
        }
        #expect(Array(original) == originalBytes)
    }
}
