// cowmem-demo: what a copy-on-write clone costs next to memcpy, in time and in memory.
//
//     swift run -c release cowmem-demo [--size-mib N]      (or: make demo)
//
// It fills a region (1 GiB by default), copies it with memcpy into a fresh buffer and
// into a warm one, clones it with CowMem, writes 1% of the pages on both sides, reads every
// page of the clone, and prints what each step cost. Then it checks every byte, and exits
// with status 1 if the clone is not an exact, isolated snapshot.

import CowMem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// MARK: - Options

func usage() -> Never {
    print("""
        usage: cowmem-demo [--size-mib N] [--system-memory]
          --size-mib N       the region's size in MiB (default 1024: 1 GiB)
          --system-memory    count region pages with the system's Shmem (/proc/meminfo)
                             instead of this process's memfds; other programs then show too
        """)
    exit(2)
}

struct Options {
    var sizeMiB = 1024
    var systemMemory = false
}

func parseOptions() -> Options {
    var options = Options()
    var arguments = CommandLine.arguments.dropFirst()
    while let argument = arguments.popFirst() {
        switch argument {
        case "--size-mib":
            guard let value = arguments.popFirst().flatMap({ Int($0) }), value > 0 else { usage() }
            options.sizeMiB = value
        case "--system-memory":
            options.systemMemory = true
        default:
            usage()
        }
    }
    return options
}

let options = parseOptions()
let sizeMiB = options.sizeMiB

let pageSize = Region.pageSize
let size = sizeMiB << 20
let pageCount = size / pageSize

// MARK: - Measuring

/// Memory that the steps can add: this process's anonymous pages (plain buffers, and the
/// private copies a clone makes of pages it writes) plus the pages that hold regions' data,
/// which live in memfds (shared memory).
func memoryInUse() -> Int {
    let anonymous = kibibytes("/proc/self/status", "RssAnon:") * 1024
    return anonymous + (options.systemMemory ? kibibytes("/proc/meminfo", "Shmem:") * 1024 : memfdBytes())
}

/// The bytes allocated to this process's memfds. Unlike the system's Shmem, no other
/// program's shared memory counts here, so the numbers hold on a busy machine too.
func memfdBytes() -> Int {
    guard let directory = opendir("/proc/self/fd") else { fail("cannot list /proc/self/fd") }
    defer { closedir(directory) }
    var seen: Set<UInt> = []
    var total = 0
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard name.first?.isNumber == true else { continue }
        let path = "/proc/self/fd/" + name
        var target = [UInt8](repeating: 0, count: 256)
        let length = target.withUnsafeMutableBytes { readlink(path, $0.baseAddress!, $0.count) }
        guard length > 0, String(decoding: target[..<length], as: UTF8.self).hasPrefix("/memfd:") else { continue }
        var info = stat()
        // The same memfd may be open twice; count its pages once.
        guard stat(path, &info) == 0, seen.insert(UInt(info.st_ino)).inserted else { continue }
        total += Int(info.st_blocks) * 512
    }
    return total
}

/// The number on the line of a /proc file that starts with `key`, in kB.
func kibibytes(_ path: String, _ key: String) -> Int {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { fail("cannot open \(path)") }
    defer { close(descriptor) }
    var text: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count <= 0 { break }
        text += chunk[..<count]
    }
    for line in String(decoding: text, as: UTF8.self).split(separator: "\n") where line.hasPrefix(key) {
        if let value = line.dropFirst(key.count).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap({ Int($0) }) {
            return value
        }
    }
    fail("no \(key) in \(path)")
}

/// How long `body` takes, in seconds.
func seconds(_ body: () throws -> Void) rethrows -> Double {
    let elapsed = try ContinuousClock().measure(body)
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
}

func median(_ values: [Double]) -> Double {
    values.sorted()[values.count / 2]
}

/// A fresh anonymous mapping: its pages do not exist until written.
func freshBuffer() -> UnsafeMutableRawPointer {
    let address = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    guard let address, address != UnsafeMutableRawPointer(bitPattern: -1) else {
        fail("mmap of \(sizeMiB) MiB failed: errno \(errno)")
    }
    return address
}

func fail(_ message: String) -> Never {
    print("FAILED: \(message)")
    exit(1)
}

// MARK: - The report

struct Row {
    let step: String
    let time: Double
    let memory: Int
    let note: String
}

func formatTime(_ seconds: Double) -> String {
    if seconds >= 1 { return format(seconds, "s") }
    if seconds >= 1e-3 { return format(seconds * 1e3, "ms") }
    return format(seconds * 1e6, "µs")
}

func formatRatio(_ ratio: Double) -> String {
    if ratio >= 10 { return "\(Int(ratio.rounded()))×" }
    let tenths = Int((ratio * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)×"
}

func formatMemory(_ bytes: Int) -> String {
    let mebibytes = abs(Double(bytes) / Double(1 << 20))
    let sign = bytes < 0 ? "-" : "+"
    if mebibytes >= 100 { return sign + "\(Int(mebibytes.rounded())) MiB" }
    let tenths = Int((mebibytes * 10).rounded())
    return sign + "\(tenths / 10).\(tenths % 10) MiB"
}

/// `value` with about three significant digits, then `unit`: "705 ms", "1.93 ms".
func format(_ value: Double, _ unit: String) -> String {
    let decimals = value >= 100 ? 0 : value >= 10 ? 1 : 2
    let scale = decimals == 0 ? 1.0 : decimals == 1 ? 10.0 : 100.0
    let scaled = Int((value * scale).rounded())
    guard decimals > 0 else { return "\(scaled) \(unit)" }
    let fraction = String(scaled % Int(scale))
    let padding = String(repeating: "0", count: decimals - fraction.count)
    return "\(scaled / Int(scale)).\(padding)\(fraction) \(unit)"
}

/// The steps measured so far.
struct Report {
    var rows: [Row] = []

    /// Runs `body` `repetitions` times and records the median time, and the memory that the
    /// first run added. `cleanUp`, untimed, runs after each run (and after the measuring).
    mutating func step(_ name: String, note: String, repeat repetitions: Int = 1,
                       _ body: () throws -> Void, cleanUp: () throws -> Void = {}) throws {
        let before = memoryInUse()
        var times = [try seconds(body)]
        let memory = memoryInUse() - before
        try cleanUp()
        for _ in 1..<max(1, repetitions) {
            times.append(try seconds(body))
            try cleanUp()
        }
        let timing = repetitions > 1 ? "median of \(repetitions); " : ""
        rows.append(Row(step: name, time: median(times), memory: memory, note: timing + note))
    }
}

// MARK: - The demonstration

print("""
    # CowMem demo

    A \(sizeMiB) MiB region (\(pageCount) pages of \(pageSize / 1024) KiB), copied three ways.
    Backend: \((try? Backend.current)?.description ?? "unknown"); page faults served by: \(FaultServer.current).
    Memory added = after each step minus before it, of this process's RssAnon (/proc/self/status)
    plus \(options.systemMemory
        ? "the system's Shmem (/proc/meminfo; other programs that run meanwhile show up too)"
        : "the pages its memfds hold (where regions keep their data)").

    """)

do {
    var report = Report()
    var source = try Region(size: size)

    // Data worth copying: every 8-byte word different, so a misplaced page would show.
    let fillTime = seconds {
        source.withUnsafeMutableBytes { bytes in
            let words = bytes.bindMemory(to: UInt64.self)
            for index in words.indices { words[index] = UInt64(index) &* 0x9E37_79B9_7F4A_7C15 }
        }
    }
    print("Filled the source region in \(formatTime(fillTime)).\n")

    var buffer: UnsafeMutableRawPointer? = nil
    try report.step("memcpy into a fresh buffer", note: "the kernel provides every page as it is written",
                repeat: 3) {
        buffer = freshBuffer()
        memcpy(buffer!, source.unsafeBaseAddress, size)
    } cleanUp: {
        munmap(buffer!, size)
    }

    // The warm buffer keeps a plain copy of the original: the snapshot the clone must equal.
    let original = freshBuffer()
    memset(original, 0, size)
    try report.step("memcpy into a warm buffer", note: "its pages were allocated and touched beforehand",
         repeat: 5) {
        memcpy(original, source.unsafeBaseAddress, size)
    }

    var clone: Region? = nil
    try report.step("cowmem clone", note: "the first clone of this region; no page data copied") {
        clone = try source.clone()
    }
    guard var clone else { fail("no clone") }

    // 1% of the pages on each side, different pages, one word at the start of each page.
    let writes = max(1, pageCount / 100)
    let stride = pageCount / writes
    let clonePages = (0..<writes).map { $0 * stride }
    let sourcePages = (0..<writes).map { $0 * stride + stride / 2 }
    let cloneMarker: UInt64 = 0xC10E_C10E_C10E_C10E
    let sourceMarker: UInt64 = 0x5005_5005_5005_5005

    try report.step("write \(writes) pages (1%) of the clone", note: "each first write copies one page") {
        clone.withMutableBytes { bytes in
            for page in clonePages { bytes.storeBytes(of: cloneMarker, toByteOffset: page * pageSize, as: UInt64.self) }
        }
    }
    try report.step("write \(writes) other pages of the source", note: "the clone keeps the old bytes") {
        source.withMutableBytes { bytes in
            for page in sourcePages { bytes.storeBytes(of: sourceMarker, toByteOffset: page * pageSize, as: UInt64.self) }
        }
    }
    var checksum: UInt64 = 0
    try report.step("read every page of the clone", note: "\(pageCount) pages; unchanged pages stay shared") {
        clone.withBytes { bytes in
            for page in 0..<pageCount {
                checksum &+= bytes.unsafeLoad(fromByteOffset: page * pageSize + 8, as: UInt64.self)
            }
        }
    }
    var another: Region? = nil
    try report.step("cowmem clone again", note: "the source, after its writes", repeat: 5) {
        another = try source.clone()
    } cleanUp: {
        try another.take()?.destroy()
    }

    // MARK: Verify every byte

    func firstDifference(_ region: borrowing Region, _ expected: UnsafeRawPointer) -> Int? {
        region.withUnsafeBytes { bytes in
            for page in 0..<pageCount where memcmp(bytes.baseAddress! + page * pageSize, expected + page * pageSize, pageSize) != 0 {
                return page
            }
            return nil
        }
    }
    // The clone: the original plus its own writes, and none of the source's.
    for page in clonePages { original.storeBytes(of: cloneMarker, toByteOffset: page * pageSize, as: UInt64.self) }
    if let page = firstDifference(clone, original) {
        fail("page \(page) of the clone is not the original snapshot plus the clone's own writes")
    }
    // The source: the original plus its own writes, and none of the clone's.
    for page in clonePages {
        let word = UInt64(page * pageSize / 8) &* 0x9E37_79B9_7F4A_7C15
        original.storeBytes(of: word, toByteOffset: page * pageSize, as: UInt64.self)
    }
    for page in sourcePages { original.storeBytes(of: sourceMarker, toByteOffset: page * pageSize, as: UInt64.self) }
    if let page = firstDifference(source, original) {
        fail("page \(page) of the source is not the original plus the source's own writes")
    }
    munmap(original, size)

    // MARK: Print

    print("| step | time | memory added | note |")
    print("| --- | ---: | ---: | --- |")
    for row in report.rows {
        print("| \(row.step) | \(formatTime(row.time)) | \(formatMemory(row.memory)) | \(row.note) |")
    }
    let fresh = report.rows[0], cloned = report.rows[2]
    let cloneMemory = report.rows[2...5].reduce(0) { $0 + $1.memory }
    let ratio = fresh.time / cloned.time
    let comparison = ratio >= 1 ? "\(formatRatio(ratio)) faster than" : "\(formatRatio(1 / ratio)) slower than"
    print("""

        Verdict: cloning \(sizeMiB) MiB took \(formatTime(cloned.time)), \(comparison) memcpy \
        into a fresh buffer (\(formatTime(fresh.time))); with 1% of the pages written on each \
        side and every page of the clone read, the clone added \(formatMemory(cloneMemory)) \
        where the copy added \(formatMemory(fresh.memory)).
        Verified: the clone equals the original snapshot plus its own writes, and the \
        source's later writes are not visible in it (every byte compared).
        """)
    _ = checksum
    try clone.destroy()
    try source.destroy()
} catch {
    fail("\(error)")
}
