@testable import CowMem
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A small, fast, seedable generator (SplitMix64), so a failing run can be replayed.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }
}

/// The seed for randomized tests: `COWMEM_TEST_SEED` to replay one, a fresh one otherwise.
func testSeed() -> UInt64 {
    if let text = getenv("COWMEM_TEST_SEED"), let seed = UInt64(String(cString: text)) {
        return seed
    }
    return UInt64.random(in: 0...UInt64.max)
}

let pageSize = Region.pageSize

/// The backend this test process runs on (`COWMEM_BACKEND` can force one).
let backendKind = (try? Backend.current)?.kind

/// With user-mode-only faults, a system call that meets an unfilled page fails with EFAULT
/// unless the page was prefaulted first; with the other backends the kernel's access is served.
let systemCallsNeedPrefault = backendKind == .userfaultfdUserMode

/// A region with the bytes it must hold, kept side by side in a class because arrays need
/// copyable elements and a region is not.
final class TrackedRegion {
    var region: Region?
    var expected: [UInt8]
    let base: UnsafeMutableRawPointer

    init(_ region: consuming Region, expected: [UInt8]) {
        self.expected = expected
        self.base = region.unsafeBaseAddress
        self.region = consume region
    }

    /// A clone of this region, tracked with a copy of this one's expected bytes.
    func clone() throws -> TrackedRegion {
        guard let clone = try region?.clone() else { fatalError("cloning a destroyed region") }
        return TrackedRegion(clone, expected: expected)
    }

    /// The first offset where the region differs from `expected`, or nil.
    func firstMismatch() -> Int? {
        let actual = UnsafeRawBufferPointer(start: base, count: expected.count)
        return firstDifference(actual, expected)
    }
}

/// The first offset where `actual` differs from `expected`, or nil if they are equal.
func firstDifference(_ actual: UnsafeRawBufferPointer, _ expected: [UInt8]) -> Int? {
    precondition(actual.count == expected.count)
    let equal = expected.withUnsafeBytes { memcmp(actual.baseAddress!, $0.baseAddress!, actual.count) == 0 }
    if equal { return nil }
    return actual.indices.first { actual[$0] != expected[$0] }
}

/// Fills `bytes` with a pattern that differs per `tag` and per position.
func fillPattern(_ bytes: UnsafeMutableRawBufferPointer, tag: UInt8) {
    for index in bytes.indices {
        bytes[index] = UInt8(truncatingIfNeeded: index &* 31 &+ index >> 12) ^ tag
    }
}

/// The pattern `fillPattern` writes, as an array.
func pattern(count: Int, tag: UInt8) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    bytes.withUnsafeMutableBytes { fillPattern($0, tag: tag) }
    return bytes
}

/// Runs `body(index)` on `count` dedicated threads at once and waits for all of them.
///
/// Dedicated threads, not tasks: a thread that faults blocks until the fault is served,
/// and tests must not tie up the cooperative pool that other tests run on.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) throws {
    let threads = try (0..<count).map { index in
        try OwnedThread(name: "cowmem-test-\(index)") { body(index) }
    }
    for thread in threads { thread.join() }
}

/// Messages collected from several threads.
final class Failures: Sendable {
    private let messages = Mutex<[String]>([])

    func record(_ message: String) {
        messages.withLock { $0.append(message) }
    }

    var all: [String] { messages.withLock { $0 } }
}
