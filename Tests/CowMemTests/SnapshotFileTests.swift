// Only `import CowMem`: `FilePath`, `FileDescriptor` and `Errno` must come with it.
import CowMem
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A new empty directory for one test, removed with what it holds by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() throws {
        let parent = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        var template = Array("\(parent)/cowmem-files-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw TestFailure("mkdtemp in \(parent): errno \(errno)")
        }
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    func file(_ name: String) -> FilePath { FilePath("\(path)/\(name)") }

    /// The names in the directory, sorted, without `.` and `..`.
    func entries() -> [String] {
        guard let directory = opendir(path) else { return ["<opendir failed: errno \(errno)>"] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    func remove() {
        for name in entries() {
            let entry = "\(path)/\(name)"
            if rmdir(entry) != 0 { unlink(entry) }
        }
        rmdir(path)
    }
}

/// Every byte of the file at `path`.
func contents(of path: FilePath) throws -> [UInt8] {
    let file = try FileDescriptor.open(path, .readOnly)
    defer { try? file.close() }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let read = try chunk.withUnsafeMutableBytes { try file.read(into: $0) }
        if read == 0 { return bytes }
        bytes += chunk[..<read]
    }
}

func writeFile(_ path: FilePath, _ bytes: [UInt8]) throws {
    let file = try FileDescriptor.open(path, .writeOnly, options: [.create, .truncate], permissions: .ownerReadWrite)
    defer { try? file.close() }
    _ = try bytes.withUnsafeBytes { try file.writeAll($0) }
}

@Suite("Saving and loading snapshots by path", .timeLimit(.minutes(1)), .watchdog(seconds: 90))
struct SnapshotFileTests {
    @Test("save(to: FilePath) and Region(loading: FilePath) round-trip every byte, and leave no temporary file")
    func regionRoundTrip() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("world.cowmem")
        let size = 9 * pageSize
        var region = try Region(size: size)
        region.withUnsafeMutableBytes { fillPattern($0, tag: 0x3C) }
        try region.save(to: path)
        #expect(directory.entries() == ["world.cowmem"])

        let loaded = try Region(loading: path)
        #expect(loaded.size == size)
        #expect(loaded.withUnsafeBytes { Array($0) } == pattern(count: size, tag: 0x3C))
        // The file is the same snapshot the descriptor API writes.
        let file = try temporaryFile()
        defer { try? file.close() }
        try region.save(to: file)
        #expect(try contents(of: path) == contents(of: file))
    }

    @Test("Saving over a snapshot replaces it by rename: a region loaded from the old file keeps the old bytes")
    func saveReplacesByRename() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("state.cowmem")
        var first = try Region(size: 4 * pageSize)
        first.withUnsafeMutableBytes { fillPattern($0, tag: 1) }
        try first.save(to: path)
        let loadedOld = try Region(loading: path)

        var second = try Region(size: 6 * pageSize)
        second.withUnsafeMutableBytes { fillPattern($0, tag: 2) }
        try second.save(to: path)
        #expect(directory.entries() == ["state.cowmem"])

        let loadedNew = try Region(loading: path)
        #expect(loadedNew.size == 6 * pageSize)
        #expect(loadedNew.withUnsafeBytes { Array($0) } == pattern(count: 6 * pageSize, tag: 2))
        // Overwriting the old file in place would have changed what this region reads.
        #expect(loadedOld.withUnsafeBytes { Array($0) } == pattern(count: 4 * pageSize, tag: 1))
    }

    @Test("A save that cannot complete leaves the target as it was and removes its temporary file")
    func failedSaveLeavesTarget() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let region = try Region(size: pageSize)

        // A directory that does not exist: the temporary file cannot even be made.
        let missing = #expect(throws: CowMemError.self) {
            try region.save(to: directory.file("missing/world.cowmem"))
        }
        #expect(missing?.code == .systemError)
        #expect(missing?.underlyingError == .noSuchFileOrDirectory)

        // A target that is a non-empty directory: writing works, the rename is refused.
        let target = directory.file("occupied")
        #expect(mkdir(target.string, 0o700) == 0)
        try writeFile(directory.file("occupied/inside"), [1, 2, 3])
        let refused = #expect(throws: CowMemError.self) { try region.save(to: target) }
        #expect(refused?.code == .systemError)
        #expect(refused?.underlyingError == .isDirectory)
        #expect(directory.entries() == ["occupied"])
        #expect(try contents(of: directory.file("occupied/inside")) == [1, 2, 3])

        // A path that names no file.
        let noName = #expect(throws: CowMemError.self) { try region.save(to: FilePath("/")) }
        #expect(noName?.underlyingError == .invalidArgument)
    }

    @Test("Region(loading: FilePath) reports a missing file and a file that is not a snapshot")
    func loadFailures() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let missing = #expect(throws: CowMemError.self) { _ = try Region(loading: directory.file("absent")) }
        #expect(missing?.code == .systemError)
        #expect(missing?.underlyingError == .noSuchFileOrDirectory)
        #expect(missing.map { "\($0)" }?.contains("absent") == true)

        let notSnapshot = directory.file("text")
        try writeFile(notSnapshot, Array(repeating: 0x41, count: 2 * pageSize))
        let refused = #expect(throws: CowMemError.self) { _ = try Region(loading: notSnapshot) }
        #expect(refused?.code == .notASnapshot)
    }

    @Test("A CowBuffer saves and loads by path and by descriptor, with its count given back")
    func cowBufferRoundTrip() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("image.cowmem")
        let count = 3 * pageSize + 123
        let bytes = pattern(count: count, tag: 0x77)
        let buffer = try CowBuffer(bytes)
        try buffer.save(to: path)
        #expect(directory.entries() == ["image.cowmem"])

        let restored = try CowBuffer(loading: path, count: count)
        #expect(restored == buffer)
        #expect(Array(restored) == bytes)

        // Without a count the buffer has the snapshot's whole pages; the tail reads as zero.
        let whole = try CowBuffer(loading: path)
        #expect(whole.count == 4 * pageSize)
        #expect(Array(whole[..<count]) == bytes)
        #expect(whole[count...].allSatisfy { $0 == 0 })

        let file = try temporaryFile()
        defer { try? file.close() }
        try buffer.save(to: file)
        #expect(try CowBuffer(loading: file, count: count) == buffer)
        #expect(try CowBuffer(loading: file, count: 0).isEmpty)

        let tooLong = #expect(throws: CowMemError.self) { try CowBuffer(loading: path, count: 4 * pageSize + 1) }
        #expect(tooLong?.code == .invalidSize)
        let negative = #expect(throws: CowMemError.self) { try CowBuffer(loading: path, count: -1) }
        #expect(negative?.code == .invalidSize)
    }

    @Test("A copy written after a save does not change the snapshot; an empty buffer cannot be saved")
    func cowBufferCopiesAndEmpty() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("b.cowmem")
        let original = try CowBuffer(repeating: 9, count: 2 * pageSize)
        var copy = original
        try copy.save(to: path)
        copy[5] = 1
        #expect(try CowBuffer(loading: path) == original)
        #expect(try CowBuffer(loading: path) != copy)

        let empty = #expect(throws: CowMemError.self) { try CowBuffer().save(to: path) }
        #expect(empty?.code == .invalidSize)
        #expect(try CowBuffer(loading: path) == original)
    }
}
