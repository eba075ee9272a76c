@testable import CowMem
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@Suite("Fault serving and system calls", .timeLimit(.minutes(1)), .watchdog(seconds: 90))
struct FaultServerTests {
    @Test("The overlay claimed fault serving and runs its own thread",
          .enabled(if: backendKind != .memfd, "needs userfaultfd: without it no faults are served"))
    func overlayThreadServes() throws {
        #expect(FaultServer.current == .overlayThread)
        #expect(backendKind == .userfaultfd || backendKind == .userfaultfdUserMode)
        #expect(FaultServer.current.description == "overlay thread")
        #expect(FaultServer.unavailable.description == "none")
        #expect(faultServer.claimError == nil)
        #expect(threadNames().contains("cowmem-faults"))
    }

    @Test("Without userfaultfd there is no fault server, and the backend says why",
          .enabled(if: backendKind == .memfd, "only on the memfd backend"))
    func noServerWithoutUserfaultfd() {
        #expect(FaultServer.current == .unavailable)
        #expect(faultServer.claimError == .notSupported)
        #expect(!threadNames().contains("cowmem-faults"))
    }

    @Test("The backend is one of the three the C library knows, with its features listed")
    func backendReported() throws {
        let backend = try Backend.current
        #expect([.userfaultfd, .userfaultfdUserMode, .memfd].contains(backend.kind))
        #expect(!backend.features.contains(""))
        #expect(backend.description.hasPrefix(backend.kind.name))
    }

    @Test("Faults on clones are served by the overlay's thread",
          .enabled(if: backendKind != .memfd, "needs userfaultfd: without it no faults are served"))
    func faultsReachTheOverlayThread() throws {
        let before = faultServerWakeups.load(ordering: .acquiring)
        let size = 64 * pageSize
        // Half written, half never written; then written again after a first clone, so that
        // a second clone has both pages nobody wrote and pages its source changed to fill.
        var source = try Region(size: size)
        source.withUnsafeMutableBytes { fillPattern(UnsafeMutableRawBufferPointer(rebasing: $0[..<(size / 2)]), tag: 0x77) }
        let first = try source.clone()
        source.withUnsafeMutableBytes { fillPattern(UnsafeMutableRawBufferPointer(rebasing: $0[..<(size / 4)]), tag: 0x78) }
        let second = try source.clone()

        var expectedFirst = [UInt8](repeating: 0, count: size)
        expectedFirst.replaceSubrange(0..<(size / 2), with: pattern(count: size / 2, tag: 0x77))
        var expectedSecond = expectedFirst
        expectedSecond.replaceSubrange(0..<(size / 4), with: pattern(count: size / 4, tag: 0x78))
        #expect(first.withUnsafeBytes { firstDifference($0, expectedFirst) } == nil)
        #expect(second.withUnsafeBytes { firstDifference($0, expectedSecond) } == nil)
        #expect(faultServerWakeups.load(ordering: .acquiring) > before)
    }

    @Test("write(2) from and read(2) into the pages of a fresh clone")
    func systemCallsOnFreshClone() throws {
        let size = 16 * pageSize
        var source = try Region(size: size)
        source.withUnsafeMutableBytes { fillPattern($0, tag: 0x21) }
        let original = pattern(count: size, tag: 0x21)
        var descriptors: [CInt] = [-1, -1]
        try #require(pipe(&descriptors) == 0)
        defer { descriptors.forEach { _ = close($0) } }

        // The kernel reads pages that the clone has not filled yet.
        let sender = try source.clone()
        let offset = pageSize / 2, count = 3 * pageSize
        if systemCallsNeedPrefault { try sender.prefault(offset..<(offset + count)) }
        let sent = sender.withUnsafeBytes { write(descriptors[1], $0.baseAddress! + offset, count) }
        #expect(sent == count)
        var received = [UInt8](repeating: 0, count: count)
        let got = received.withUnsafeMutableBytes { read(descriptors[0], $0.baseAddress!, count) }
        #expect(got == count)
        #expect(received[...] == original[offset..<(offset + count)])

        // The kernel writes pages that the clone has not filled yet.
        var receiver = try source.clone()
        let incoming = pattern(count: count, tag: 0x9C)
        if systemCallsNeedPrefault { try receiver.prefault(offset..<(offset + count), forWriting: true) }
        #expect(incoming.withUnsafeBytes { write(descriptors[1], $0.baseAddress!, count) } == count)
        let readIn = receiver.withUnsafeMutableBytes { read(descriptors[0], $0.baseAddress! + offset, count) }
        #expect(readIn == count)
        var expected = original
        expected.replaceSubrange(offset..<(offset + count), with: incoming)
        #expect(receiver.withUnsafeBytes { firstDifference($0, expected) } == nil)
        #expect(source.withUnsafeBytes { firstDifference($0, original) } == nil)
        #expect(sender.withUnsafeBytes { firstDifference($0, original) } == nil)
    }

    @Test("read(2) into a fresh, never-written region")
    func readIntoFreshRegion() throws {
        var region = try Region(size: 4 * pageSize)
        if systemCallsNeedPrefault { try region.prefault(0..<region.size, forWriting: true) }
        var descriptors: [CInt] = [-1, -1]
        try #require(pipe(&descriptors) == 0)
        defer { descriptors.forEach { _ = close($0) } }
        let incoming = pattern(count: 2 * pageSize, tag: 0x5E)
        #expect(incoming.withUnsafeBytes { write(descriptors[1], $0.baseAddress!, $0.count) } == incoming.count)
        let readIn = region.withUnsafeMutableBytes { read(descriptors[0], $0.baseAddress! + pageSize + 1, incoming.count) }
        #expect(readIn == incoming.count)
        var expected = [UInt8](repeating: 0, count: 4 * pageSize)
        expected.replaceSubrange((pageSize + 1)..<(pageSize + 1 + incoming.count), with: incoming)
        #expect(region.withUnsafeBytes { firstDifference($0, expected) } == nil)
    }

    @Test("Prefaulting changes no byte, on a fresh clone and on a written region")
    func prefaultKeepsContent() throws {
        var source = try Region(size: 8 * pageSize)
        source.withUnsafeMutableBytes { fillPattern($0, tag: 0x0F) }
        let clone = try source.clone()
        try clone.prefault(0..<clone.size)
        try clone.prefault(pageSize..<(3 * pageSize + 1), forWriting: true)
        try source.prefault(5..<(2 * pageSize), forWriting: true)
        #expect(clone.withUnsafeBytes { firstDifference($0, pattern(count: 8 * pageSize, tag: 0x0F)) } == nil)
        #expect(source.withUnsafeBytes { firstDifference($0, pattern(count: 8 * pageSize, tag: 0x0F)) } == nil)
    }

    @Test("Prefaulting outside the region is a programming error and traps")
    func prefaultOutsideTraps() async {
        await #expect(processExitsWith: .failure) {
            let region = try Region(size: 4096)
            try region.prefault(0..<(region.size + 1))
        }
    }

    @Test("The overlay's server thread blocks the application's signals, not the crash handler's",
          .enabled(if: backendKind != .memfd, "needs userfaultfd: without it no faults are served"))
    func serverBlocksSignals() throws {
        _ = FaultServer.current
        let server = try #require(threads().first { $0.name == "cowmem-faults" })
        let blocked = try #require(statusField("SigBlk", ofThread: server.id).flatMap { UInt64($0, radix: 16) })
        for signal in [SIGINT, SIGTERM, SIGALRM, SIGUSR1, SIGUSR2, SIGCHLD, SIGPIPE] {
            #expect(blocked & (1 << UInt64(signal - 1)) != 0, "signal \(signal) is not blocked")
        }
        for signal in [SIGPROF, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS] {
            #expect(blocked & (1 << UInt64(signal - 1)) == 0, "signal \(signal) is blocked")
        }
    }

    @Test("A program that traps after using regions prints its backtrace, with CowMem's threads suspended",
          .enabled(if: backendKind != .memfd, "needs userfaultfd: without it no faults are served"),
          .enabled(if: backtracerInstalled, "needs the Swift runtime's swift-backtrace"))
    func crashBacktraceSuspendsCowMemThreads() async throws {
        let result = await withBacktracesInExitTests {
            await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
                // A clone after a write folds, which may start the C library's threads too.
                var region = try Region(size: 64 * pageSize)
                region.withMutableBytes { $0.storeBytes(of: 1, toByteOffset: 0, as: UInt8.self) }
                let first = try region.clone()
                region.withMutableBytes { $0.storeBytes(of: 2, toByteOffset: pageSize, as: UInt8.self) }
                let second = try region.clone()
                _ = first.withBytes { $0.unsafeLoad(as: UInt8.self) }
                _ = second.withBytes { $0.unsafeLoad(as: UInt8.self) }
                // Name CowMem's threads for the parent (the overlay's and the C library's).
                for thread in FaultServerTests().threads() where thread.name.hasPrefix("cowmem") {
                    let line = Array("cowmem thread \(thread.id)\n".utf8)
                    _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
                }
                fatalError("deliberate crash after using regions")
            }
        }
        let errorOutput = String(decoding: try #require(result).standardErrorContent, as: UTF8.self)
        let lines = errorOutput.split(separator: "\n")
        let cowMemThreads = Set(lines.compactMap { $0.firstMatch(of: /^cowmem thread (\d+)$/)?.1 })
        // The backtracer says `failed to suspend thread <id> while processing a crash`.
        let unsuspended = Set(lines.compactMap { $0.firstMatch(of: /failed to suspend thread (\d+)/)?.1 })
        #expect(!cowMemThreads.isEmpty, "the child named no CowMem thread:\n\(errorOutput)")
        #expect(errorOutput.contains("deliberate crash after using regions"))
        #expect(errorOutput.contains("Program crashed"), "no backtrace printed:\n\(errorOutput)")
        #expect(errorOutput.contains(" crashed:"), "no crashed thread in the backtrace:\n\(errorOutput)")
        // Other threads can fail to suspend for a moment of their own: glibc blocks every
        // signal in a thread while it starts and while it exits, and the concurrency pool
        // starts and ends threads as it likes. CowMem's threads live for the whole process.
        #expect(cowMemThreads.isDisjoint(with: unsuspended),
                "CowMem's threads \(cowMemThreads.intersection(unsuspended).sorted()) were not suspended:\n\(errorOutput)")
    }

    /// The names of this process's threads.
    private func threadNames() -> [String] {
        threads().map(\.name)
    }

    /// This process's threads: their ids and names.
    private func threads() -> [(id: String, name: String)] {
        guard let directory = opendir("/proc/self/task") else { return [] }
        defer { closedir(directory) }
        var threads: [(id: String, name: String)] = []
        while let entry = readdir(directory) {
            let task = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard task.first?.isNumber == true, let name = firstLine(of: "/proc/self/task/\(task)/comm") else { continue }
            threads.append((task, name))
        }
        return threads
    }

    /// The value of a field (`SigBlk:` and the like) of a thread's status file.
    private func statusField(_ field: String, ofThread id: String) -> String? {
        guard let line = lines(of: "/proc/self/task/\(id)/status").first(where: { $0.hasPrefix(field + ":") }) else {
            return nil
        }
        return String(line.dropFirst(field.count + 1).trimmingPrefix(while: { $0 == " " || $0 == "\t" }))
    }

    private func firstLine(of path: String) -> String? {
        lines(of: path).first
    }

    /// The lines of a small text file (a /proc file), without their newlines.
    private func lines(of path: String) -> [String] {
        guard let file = fopen(path, "r") else { return [] }
        defer { fclose(file) }
        var lines: [String] = []
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, CInt(line.count), file) != nil {
            lines.append(String(decoding: line.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return lines
    }
}

/// Whether the Swift runtime's backtracer is installed with the runtime this test runs on: the
/// runtime runs `libexec/swift/linux/swift-backtrace` beside its own `lib/swift/linux`.
private let backtracerInstalled: Bool = {
    guard let maps = fopen("/proc/self/maps", "r") else { return false }
    defer { fclose(maps) }
    var line = [CChar](repeating: 0, count: 4096)
    while fgets(&line, CInt(line.count), maps) != nil {
        let text = String(decoding: line.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard text.hasSuffix("/libswiftCore.so"), let start = text.firstIndex(of: "/"),
              let lib = text.firstRange(of: "/lib/swift/linux/") else { continue }
        return access(String(text[start..<lib.lowerBound]) + "/libexec/swift/linux/swift-backtrace", X_OK) == 0
    }
    return false
}()

/// Runs `body` with the Swift backtracer enabled, and its output fixed, in the exit tests it
/// starts.
///
/// Swift Testing runs an exit test's child with `SWIFT_BACKTRACE=enable=no` unless the parent's
/// environment sets the variable; the child inherits the parent's environment when it starts.
/// Fixing every setting that changes what is printed (no colour, no interactive prompt, on
/// standard error, only the crashed thread, no symbol look-up, which takes seconds) keeps the
/// output the same whatever the caller's own `SWIFT_BACKTRACE` says.
private func withBacktracesInExitTests<T>(_ body: () async throws -> T) async rethrows -> T {
    let previous = getenv("SWIFT_BACKTRACE").map { String(cString: $0) }
    setenv("SWIFT_BACKTRACE",
           "enable=yes,interactive=no,color=no,output-to=stderr,threads=crashed,symbolicate=off,images=none,registers=none",
           1)
    defer {
        if let previous { setenv("SWIFT_BACKTRACE", previous, 1) } else { unsetenv("SWIFT_BACKTRACE") }
    }
    return try await body()
}
