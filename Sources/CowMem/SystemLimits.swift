import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// The kernel limits that an `ENOMEM` can stand for, read when a call has failed, to say
// which one it was.

/// The process's memory mappings and the kernel's limit on them, `vm.max_map_count`.
internal struct MappingCount: CustomStringConvertible {
    /// The mappings the process holds: the lines of `/proc/self/maps`.
    let mappings: Int

    /// `vm.max_map_count`.
    let limit: Int

    /// How far below the limit a failed call may leave the count. `mmap(2)` fails at the
    /// limit, `mremap(2)` 3 below it, and a failed CowMem call first undoes the few mappings
    /// it had made (a region and its layer, a clone's overlay); 16 is more than any call makes.
    static let spare = 16

    /// Whether an `ENOMEM` now is the mapping limit rather than a lack of memory.
    var isExhausted: Bool { mappings + MappingCount.spare >= limit }

    var description: String {
        "the process has \(mappings) memory mappings and vm.max_map_count allows \(limit)"
    }

    /// The count now, or `nil` if `/proc` cannot be read (no descriptor left, no `/proc`).
    static var current: MappingCount? {
        #if DEBUG
        if let limit = EngineMocking.current?.mappingLimit {
            return countLines(of: "/proc/self/maps").map { MappingCount(mappings: $0, limit: limit) }
        }
        #endif
        guard let limit = readNumber(from: "/proc/sys/vm/max_map_count"),
              let mappings = countLines(of: "/proc/self/maps") else { return nil }
        return MappingCount(mappings: mappings, limit: limit)
    }
}

/// The number at the start of a small file (a sysctl).
private func readNumber(from path: String) -> Int? {
    readText(from: path, limit: 64).flatMap { Int($0.prefix { $0.isNumber }) }
}

/// The first `limit` bytes of a file, as text.
private func readText(from path: String, limit: Int) -> String? {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return nil }
    defer { close(descriptor) }
    var bytes = [UInt8](repeating: 0, count: limit)
    var filled = 0
    while filled < limit {
        let count = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + filled, limit - filled) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { break }
        filled += count
    }
    return String(decoding: bytes[..<filled], as: UTF8.self)
}

/// The number of lines of a file, read through a buffer on the stack: the process may be out
/// of mappings, which a heap allocation can need.
private func countLines(of path: String) -> Int? {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return nil }
    defer { close(descriptor) }
    return withUnsafeTemporaryAllocation(byteCount: 4096, alignment: 16) { buffer -> Int? in
        var lines = 0
        while true {
            let count = read(descriptor, buffer.baseAddress, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count < 0 { return nil }
            if count == 0 { return lines }
            for byte in UnsafeRawBufferPointer(rebasing: buffer[..<count]) where byte == UInt8(ascii: "\n") {
                lines += 1
            }
        }
    }
}
