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

/// Why the kernel refuses the commit charge of a clone, when it always will.
internal enum CommitCharge {
    /// A region's own pages are a memfd's, charged only when they are written, so creating a
    /// region charges nothing. The first engine (the `memfd` backend's; without `engine-v2`
    /// in the features) maps a clone privately and writably, and the kernel charges such a
    /// mapping its whole size up front, since any page of it may be written and copied.
    /// Under `vm.overcommit_memory=0` (the default) Linux refuses any one charge larger than
    /// RAM plus swap; under 2, one larger than what `CommitLimit` has left; under 1, none.
    /// Engine v2 maps with `MAP_NORESERVE` and is charged page by page instead. Returns the
    /// explanation when `size` is over the limit now, `nil` otherwise.
    static func refusal(ofCloning size: Int) -> String? {
        guard case .success(let features) = Engine.features(),
              !features.split(separator: ",").contains("engine-v2"),
              let mode = readNumber(from: "/proc/sys/vm/overcommit_memory") else { return nil }
        let charge = "a clone is charged its whole size, \(size) bytes, since any of its pages may be written"
        switch mode {
        case 0:
            guard let ram = meminfo("MemTotal"), let swap = meminfo("SwapTotal"), size > ram + swap else {
                return nil
            }
            return "\(charge); with vm.overcommit_memory=0 Linux refuses any charge larger than RAM plus swap, "
                + "\(ram + swap) bytes here, so a region this large can be created and used but never cloned"
        case 2:
            guard let left = commitLimitLeft(), size > left else { return nil }
            return "\(charge); with vm.overcommit_memory=2 the commit limit (CommitLimit) has \(left) bytes left"
        default:
            return nil
        }
    }

    /// `CommitLimit - Committed_AS` from `/proc/meminfo`, in bytes.
    private static func commitLimitLeft() -> Int? {
        guard let limit = meminfo("CommitLimit"), let committed = meminfo("Committed_AS") else { return nil }
        return max(0, limit - committed)
    }

    /// A field of `/proc/meminfo`, in bytes (the file gives kibibytes).
    private static func meminfo(_ field: String) -> Int? {
        guard let text = readText(from: "/proc/meminfo", limit: 16384),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
              let kibibytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            return nil
        }
        return kibibytes * 1024
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
