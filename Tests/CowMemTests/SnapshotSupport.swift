import CowMem
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A new, already unlinked temporary file, open for reading and writing; the caller closes it.
func temporaryFile(in directory: String? = nil) throws -> FileDescriptor {
    let directory = directory ?? getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    var template = Array("\(directory)/cowmem-test-XXXXXX".utf8CString)
    let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
    guard descriptor >= 0 else { throw TestFailure("mkstemp in \(directory): errno \(errno)") }
    _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
    template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
    return FileDescriptor(rawValue: descriptor)
}

/// Opens the file behind `file` again, with other flags (`O_RDONLY`, `O_APPEND`, ...).
func reopen(_ file: FileDescriptor, flags: CInt) throws -> FileDescriptor {
    let descriptor = open("/proc/self/fd/\(file.rawValue)", flags | O_CLOEXEC)
    guard descriptor >= 0 else { throw TestFailure("reopen: errno \(errno)") }
    return FileDescriptor(rawValue: descriptor)
}

/// Every byte of the file behind `file`.
func contents(of file: FileDescriptor) throws -> [UInt8] {
    var status = stat()
    guard fstat(file.rawValue, &status) == 0 else { throw TestFailure("fstat: errno \(errno)") }
    var bytes = [UInt8](repeating: 0, count: Int(status.st_size))
    var done = 0
    while done < bytes.count {
        let result = bytes.withUnsafeMutableBytes { pread(file.rawValue, $0.baseAddress! + done, $0.count - done, off_t(done)) }
        guard result > 0 else { throw TestFailure("pread: returned \(result), errno \(errno)") }
        done += result
    }
    return bytes
}

/// A region beside what the snapshot contract says about it: its bytes, its origin, and
/// every page written since it was made or last reset.
final class SnapshotModel {
    var region: Region?
    let base: UnsafeMutableRawPointer
    var content: [UInt8]
    var origin: [UInt8]
    var written: Set<Int> = []

    init(_ region: consuming Region, content: [UInt8]) {
        base = region.unsafeBaseAddress
        self.content = content
        self.origin = content
        self.region = consume region
    }

    func write(_ bytes: [UInt8], at offset: Int) {
        bytes.withUnsafeBytes { (base + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        content.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
        written.formUnion((offset / pageSize)...((offset + bytes.count - 1) / pageSize))
    }

    /// A clone: its origin is this region's content now.
    func clone() throws -> SnapshotModel {
        SnapshotModel(try region!.clone(), content: content)
    }

    func reset() throws {
        try region!.reset()
        content = origin
        written = []
    }

    /// The pages whose content differs from the origin now.
    var differing: Set<Int> {
        Set((0..<(content.count / pageSize)).filter { page in
            content[(page * pageSize)..<((page + 1) * pageSize)] != origin[(page * pageSize)..<((page + 1) * pageSize)]
        })
    }

    /// What is wrong with `dirtyPages()` or the content, or nil.
    func check() throws -> String? {
        if let offset = firstDifference(UnsafeRawBufferPointer(start: base, count: content.count), content) {
            return "content differs from the model at byte \(offset)"
        }
        let listed = try region!.dirtyPages()
        if listed != listed.sorted() || Set(listed).count != listed.count {
            return "dirtyPages() is not ascending without repeats: \(listed)"
        }
        let list = Set(listed)
        if !differing.isSubset(of: list) {
            return "dirtyPages() \(listed) misses changed pages \(differing.subtracting(list).sorted())"
        }
        if !list.isSubset(of: written) {
            return "dirtyPages() \(listed) lists pages never written: \(list.subtracting(written).sorted())"
        }
        return nil
    }
}
