@testable import CowMem
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Random creates, clones, writes, system-call reads and writes, and destroys, applied both
/// to regions and to plain byte arrays (the oracle: what `memcpy` would give). Every byte is
/// compared. The seed is printed; `COWMEM_TEST_SEED=<seed> swift test` replays a run.
@Suite("Differential against a byte-array model", .timeLimit(.minutes(1)), .watchdog(seconds: 90))
struct DifferentialTests {
    @Test("One thread, random operations")
    func singleThread() throws {
        let seed = testSeed()
        print("differential single-thread seed: \(seed)")
        var run = try DifferentialRun(seed: seed, maximumRegions: 12, maximumPages: 24)
        let failure = run.run(steps: 3000)
        #expect(failure == nil, "seed \(seed): \(failure ?? "")")
    }

    @Test("Four threads at once, each on its own regions, sharing the one fault server")
    func concurrentThreads() throws {
        let seed = testSeed()
        print("differential concurrent seed: \(seed) (thread i uses seed + i)")
        let failures = Failures()
        try onThreads(4) { index in
            let threadSeed = seed &+ UInt64(index)
            do {
                var run = try DifferentialRun(seed: threadSeed, maximumRegions: 8, maximumPages: 16)
                if let failure = run.run(steps: 1500) {
                    failures.record("thread \(index), seed \(threadSeed): \(failure)")
                }
            } catch {
                failures.record("thread \(index), seed \(threadSeed): \(error)")
            }
        }
        #expect(failures.all == [])
    }

    @Test("Four threads clone one shared source at once; every clone is an exact snapshot")
    func concurrentClonesOfOneSource() throws {
        let size = 32 * pageSize
        var source = try Region(size: size)
        source.withUnsafeMutableBytes { fillPattern($0, tag: 0x33) }
        let shared = SharedRegion(source)
        let failures = Failures()
        try onThreads(4) { index in
            var random = SeededGenerator(seed: UInt64(index))
            for round in 0..<50 {
                do {
                    let clone = TrackedRegion(try shared.region.clone(), expected: pattern(count: size, tag: 0x33))
                    for _ in 0..<4 {
                        let offset = Int.random(in: 0..<size, using: &random)
                        clone.base.storeBytes(of: UInt8(index + 1), toByteOffset: offset, as: UInt8.self)
                        clone.expected[offset] = UInt8(index + 1)
                    }
                    if let offset = clone.firstMismatch() {
                        failures.record("thread \(index) round \(round): clone differs at \(offset)")
                    }
                    try clone.region.take()!.destroy()
                } catch {
                    failures.record("thread \(index) round \(round): \(error)")
                }
            }
        }
        #expect(failures.all == [])
        #expect(shared.region.withUnsafeBytes { firstDifference($0, pattern(count: size, tag: 0x33)) } == nil)
    }
}

/// A region that several threads borrow at once, for reading and cloning only.
final class SharedRegion: Sendable {
    let region: Region

    init(_ region: consuming Region) {
        self.region = region
    }
}

/// One randomized run: regions beside their expected bytes, and a pipe for system calls.
struct DifferentialRun {
    private var random: SeededGenerator
    private var regions: [TrackedRegion] = []
    private let maximumRegions: Int
    private let maximumPages: Int
    private var recent: [String] = []
    private let pipeRead: CInt
    private let pipeWrite: CInt

    init(seed: UInt64, maximumRegions: Int, maximumPages: Int) throws {
        random = SeededGenerator(seed: seed)
        self.maximumRegions = maximumRegions
        self.maximumPages = maximumPages
        var descriptors: [CInt] = [-1, -1]
        guard pipe(&descriptors) == 0 else { throw TestFailure("pipe: errno \(errno)") }
        pipeRead = descriptors[0]
        pipeWrite = descriptors[1]
    }

    /// Runs `steps` random operations; returns what went wrong first, or nil.
    mutating func run(steps: Int) -> String? {
        defer {
            close(pipeRead)
            close(pipeWrite)
        }
        do {
            for step in 0..<steps {
                try applyRandomOperation()
                if let mismatch = verifyOneRandomly() ?? (step % 250 == 249 ? verifyAll() : nil) {
                    return "step \(step): \(mismatch); last operations: \(recent.joined(separator: "; "))"
                }
            }
            if let mismatch = verifyAll() {
                return "at the end: \(mismatch); last operations: \(recent.joined(separator: "; "))"
            }
            while let tracked = regions.popLast() {
                try tracked.region.take()!.destroy()
            }
            return nil
        } catch {
            return "\(error); last operations: \(recent.joined(separator: "; "))"
        }
    }

    private mutating func applyRandomOperation() throws {
        if regions.isEmpty {
            return try create()
        }
        switch Int.random(in: 0..<100, using: &random) {
        case 0..<8: regions.count < maximumRegions ? try create() : try destroy()
        case 8..<22: regions.count < maximumRegions ? try clone() : try destroy()
        case 22..<28: try destroy()
        case 28..<55: writeSmall()
        case 55..<70: writeAcrossPages()
        case 70..<78: writeThroughSpan()
        case 78..<89: try readFromPipeIntoRegion()
        default: try writeFromRegionIntoPipe()
        }
    }

    // MARK: Operations

    private mutating func create() throws {
        let size = Int.random(in: 1...(maximumPages * pageSize), using: &random)
        let region = try Region(size: size)
        let zeroes = [UInt8](repeating: 0, count: region.size)
        note("create \(size) -> #\(regions.count) (\(zeroes.count) bytes)")
        regions.append(TrackedRegion(region, expected: zeroes))
    }

    private mutating func clone() throws {
        let index = randomRegionIndex()
        note("clone #\(index) -> #\(regions.count)")
        regions.append(try regions[index].clone())
    }

    private mutating func destroy() throws {
        let index = randomRegionIndex()
        note("destroy #\(index)")
        try regions.remove(at: index).region.take()!.destroy()
    }

    private mutating func writeSmall() {
        let index = randomRegionIndex()
        let count = Int.random(in: 1...16, using: &random)
        let offset = Int.random(in: 0...(regions[index].expected.count - count), using: &random)
        write(randomBytes(count), into: index, at: offset)
    }

    /// A write that starts shortly before a page boundary and may cover whole pages.
    private mutating func writeAcrossPages() {
        let index = randomRegionIndex()
        let size = regions[index].expected.count
        guard size > pageSize else { return writeSmall() }
        let boundary = pageSize * Int.random(in: 1..<(size / pageSize), using: &random)
        let offset = boundary - Int.random(in: 1...64, using: &random)
        let count = min(size - offset, Int.random(in: 65...(2 * pageSize + 64), using: &random))
        write(randomBytes(count), into: index, at: offset)
    }

    /// A write through `withMutableBytes`, the safe way in.
    private mutating func writeThroughSpan() {
        let index = randomRegionIndex()
        let tracked = regions[index]
        let offset = Int.random(in: 0...(tracked.expected.count - 8), using: &random)
        let value = random.next()
        note("span store 8 bytes at \(offset) in #\(index)")
        tracked.region!.withMutableBytes { bytes in
            bytes.storeBytes(of: value, toByteOffset: offset, as: UInt64.self)
        }
        withUnsafeBytes(of: value) { tracked.expected.replaceSubrange(offset..<(offset + 8), with: $0) }
    }

    /// `read(2)` into region memory: the kernel writes pages that may not be filled yet.
    private mutating func readFromPipeIntoRegion() throws {
        let index = randomRegionIndex()
        let tracked = regions[index]
        let count = Int.random(in: 1...min(tracked.expected.count, 2 * pageSize), using: &random)
        let offset = Int.random(in: 0...(tracked.expected.count - count), using: &random)
        let bytes = randomBytes(count)
        note("read(2) \(count) bytes into #\(index) at \(offset)")
        try writeAll(bytes)
        if systemCallsNeedPrefault {
            try tracked.region?.prefault(offset..<(offset + count), forWriting: true)
        }
        var done = 0
        while done < count {
            let result = read(pipeRead, tracked.base + offset + done, count - done)
            guard result > 0 else { throw TestFailure("read(2) into region: returned \(result), errno \(errno)") }
            done += result
        }
        tracked.expected.replaceSubrange(offset..<(offset + count), with: bytes)
    }

    /// `write(2)` from region memory: the kernel reads pages that may not be filled yet.
    private mutating func writeFromRegionIntoPipe() throws {
        let index = randomRegionIndex()
        let tracked = regions[index]
        let count = Int.random(in: 1...min(tracked.expected.count, 2 * pageSize), using: &random)
        let offset = Int.random(in: 0...(tracked.expected.count - count), using: &random)
        note("write(2) \(count) bytes from #\(index) at \(offset)")
        if systemCallsNeedPrefault {
            try tracked.region?.prefault(offset..<(offset + count))
        }
        var done = 0
        while done < count {
            let result = Glibc.write(pipeWrite, tracked.base + offset + done, count - done)
            guard result > 0 else { throw TestFailure("write(2) from region: returned \(result), errno \(errno)") }
            done += result
        }
        var received = [UInt8](repeating: 0, count: count)
        try readAll(into: &received)
        if received[...] != tracked.expected[offset..<(offset + count)] {
            throw TestFailure("write(2) from #\(index) at \(offset) sent bytes that differ from the model")
        }
    }

    // MARK: Helpers

    private mutating func write(_ bytes: [UInt8], into index: Int, at offset: Int) {
        note("write \(bytes.count) bytes into #\(index) at \(offset)")
        let tracked = regions[index]
        bytes.withUnsafeBytes { (tracked.base + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        tracked.expected.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
    }

    private func writeAll(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { buffer in
            var done = 0
            while done < buffer.count {
                let result = Glibc.write(pipeWrite, buffer.baseAddress! + done, buffer.count - done)
                guard result > 0 else { throw TestFailure("write(2) to pipe: errno \(errno)") }
                done += result
            }
        }
    }

    private func readAll(into bytes: inout [UInt8]) throws {
        try bytes.withUnsafeMutableBytes { buffer in
            var done = 0
            while done < buffer.count {
                let result = read(pipeRead, buffer.baseAddress! + done, buffer.count - done)
                guard result > 0 else { throw TestFailure("read(2) from pipe: errno \(errno)") }
                done += result
            }
        }
    }

    private mutating func verifyOneRandomly() -> String? {
        guard !regions.isEmpty, Int.random(in: 0..<4, using: &random) == 0 else { return nil }
        let index = randomRegionIndex()
        return regions[index].firstMismatch().map { "region #\(index) differs from the model at byte \($0)" }
    }

    private func verifyAll() -> String? {
        for (index, tracked) in regions.enumerated() {
            if let offset = tracked.firstMismatch() {
                return "region #\(index) differs from the model at byte \(offset)"
            }
        }
        return nil
    }

    private mutating func randomRegionIndex() -> Int {
        Int.random(in: 0..<regions.count, using: &random)
    }

    private mutating func randomBytes(_ count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
    }

    private mutating func note(_ operation: String) {
        recent.append(operation)
        if recent.count > 12 { recent.removeFirst() }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}
