// cowmem-swift-bench: what a Swift program pays to keep a snapshot of a large buffer and
// change one byte, with an Array (copy-on-write of the whole buffer on the first write)
// and with a CowMem region (copy-on-write of one page).
//
//     swift run -c release cowmem-swift-bench [--size-mib N] [--reps N] [--buffer-sizes 64,256]
//         [--loop-mib 64] [--loop-reps 9] [--undo-mib 256] [--undo-edits 10000]
//
// Prints Markdown tables of medians and the ratios: first a region clone against an Array,
// then CowBuffer against [UInt8] with the same value-semantics code, `var b = a; b[i] = x`,
// at each of the buffer sizes, with the memory the copy added; then loops that read and
// write every byte by subscript, on both. A program, not a test: run it
// on a quiet machine and compare the rows of one run.

import CowMem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

func option(_ name: String, default value: Int) -> Int {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count,
          let parsed = Int(arguments[index + 1]), parsed > 0 else { return value }
    return parsed
}

func nanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

func median(_ samples: [UInt64]) -> Double {
    let sorted = samples.sorted()
    return Double(sorted[sorted.count / 2])
}

/// `value` with `digits` decimals (no Foundation here).
func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = Int((value * scale).rounded())
    let whole = scaled / Int(scale), fraction = scaled % Int(scale)
    guard digits > 0 else { return String(whole) }
    let text = String(fraction)
    return "\(whole).\(String(repeating: "0", count: digits - text.count))\(text)"
}

func milliseconds(_ nanoseconds: Double) -> String {
    let value = nanoseconds / 1e6
    return fixed(value, value < 1 ? 3 : 1) + " ms"
}

let sizeMiB = option("--size-mib", default: 256)
let repetitions = option("--reps", default: 5)
let size = sizeMiB << 20

// An Array: `var copy = original` shares the buffer; the first write copies all of it.
var original = [UInt8](repeating: 7, count: size)
var arraySamples: [UInt64] = []
for round in 0...repetitions {
    let start = nanoseconds()
    var copy = original
    copy[size / 2] = 8
    let end = nanoseconds()
    precondition(copy[size / 2] == 8 && original[size / 2] == 7, "the array copy is wrong")
    if round > 0 { arraySamples.append(end - start) }  // round 0 warms up
}
original = []

// A region: clone() shares every page; the first write copies one page.
var region = try Region(size: size)
region.withMutableBytes { bytes in
    for offset in stride(from: 0, to: size, by: Region.pageSize) {
        bytes.storeBytes(of: 7, toByteOffset: offset, as: UInt8.self)
    }
}
var regionSamples: [UInt64] = []
for round in 0...repetitions {
    let start = nanoseconds()
    var copy = try region.clone()
    copy.withMutableBytes { $0.storeBytes(of: 8, toByteOffset: size / 2, as: UInt8.self) }
    let end = nanoseconds()
    let changed = copy.withBytes { $0.unsafeLoad(fromByteOffset: size / 2, as: UInt8.self) }
    let kept = region.withBytes { $0.unsafeLoad(fromByteOffset: size / 2, as: UInt8.self) }
    precondition(changed == 8 && kept == 7, "the region clone is wrong")
    if round > 0 { regionSamples.append(end - start) }
}

let arrayMedian = median(arraySamples)
let regionMedian = median(regionSamples)
print("# Snapshot a \(sizeMiB) MiB buffer and change one byte, in Swift")
print()
print("Medians of \(repetitions) after one warm-up; backend \(try Backend.current.kind).")
print()
print("| how | time |")
print("| --- | ---: |")
print("| `[UInt8]`: `var copy = original; copy[i] = x` | \(milliseconds(arrayMedian)) |")
print("| CowMem: `var copy = try region.clone()`, then one store | \(milliseconds(regionMedian)) |")
print()
print("CowMem is \(fixed(arrayMedian / regionMedian, 0))× faster than the Array copy.")

// CowBuffer against [UInt8]: the same code, `var b = a; b[i] = x`, on both. The first write
// after the copy copies the whole array, and one page of the buffer's region.

/// The process's resident anonymous and shared-memory pages (`RssAnon` + `RssShmem`), in
/// bytes: an Array's copy is anonymous memory, a region's pages live in memfds (shmem) and
/// its copied pages are anonymous.
func residentBytes() -> Int {
    guard let file = fopen("/proc/self/status", "r") else { return 0 }
    defer { fclose(file) }
    var total = 0
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, CInt(line.count), file) != nil {
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard text.hasPrefix("RssAnon:") || text.hasPrefix("RssShmem:") else { continue }
        total += Int(text.split(separator: " ").dropFirst().first { !$0.isEmpty }.flatMap { Int($0) } ?? 0) * 1024
    }
    return total
}

func mebibytes(_ bytes: Double) -> String {
    let value = bytes / Double(1 << 20)
    return (value >= 0 ? "+" : "") + fixed(value, value.magnitude < 1 ? 3 : 1) + " MiB"
}

/// The median time of `var b = a; b[i] = x` on `original`, and the median memory the kept
/// copy added; one warm-up round first.
func firstWriteAfterCopy<Buffer: MutableCollection<UInt8>>(
    _ original: Buffer, repetitions: Int
) -> (nanoseconds: Double, bytes: Double) where Buffer.Index == Int {
    var times: [UInt64] = [], added: [UInt64] = []
    let middle = original.count / 2
    for round in 0...repetitions {
        let before = residentBytes()
        let start = nanoseconds()
        var copy = original
        copy[middle] = 8
        let end = nanoseconds()
        let after = residentBytes()
        precondition(copy[middle] == 8 && original[middle] == 7, "the copy is wrong")
        if round > 0 {
            times.append(end - start)
            added.append(UInt64(max(0, after - before)))
        }
        withExtendedLifetime(copy) {}
    }
    return (median(times), median(added))
}

let bufferSizes: [Int] = {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: "--buffer-sizes"), index + 1 < arguments.count else { return [64, 256] }
    let sizes = arguments[index + 1].split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 }
    return sizes.isEmpty ? [64, 256] : sizes
}()

print()
print("# CowBuffer against [UInt8]: `var b = a; b[i] = x`")
print()
print("The first write after a copy; medians of \(repetitions) after one warm-up. Memory added: RssAnon + RssShmem")
print("while the copy is alive.")
print()
print("| size | `[UInt8]` | `CowBuffer` | [UInt8] ÷ CowBuffer | memory added, `[UInt8]` | memory added, `CowBuffer` |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
for mebibytesOfBuffer in bufferSizes {
    let count = mebibytesOfBuffer << 20
    var array = [UInt8](repeating: 7, count: count)
    let arrayResult = firstWriteAfterCopy(array, repetitions: repetitions)
    array = []
    var buffer = try CowBuffer(repeating: 7, count: count)
    let bufferResult = firstWriteAfterCopy(buffer, repetitions: repetitions)
    buffer = CowBuffer()
    print("| \(mebibytesOfBuffer) MiB | \(milliseconds(arrayResult.nanoseconds)) | \(milliseconds(bufferResult.nanoseconds)) "
          + "| \(fixed(arrayResult.nanoseconds / bufferResult.nanoseconds, 0))× "
          + "| \(mebibytes(arrayResult.bytes)) | \(mebibytes(bufferResult.bytes)) |")
}

// Every byte by subscript: what the wrapper costs when nothing is copied. The same generic
// code runs on both (specialised for each), interleaved round by round so that a noisy
// machine slows both alike.

/// The sum of the bytes, read one subscript at a time.
@inline(never)
func sumBySubscript<Bytes: RandomAccessCollection<UInt8>>(_ bytes: Bytes) -> UInt64 where Bytes.Index == Int {
    var sum: UInt64 = 0
    for index in 0..<bytes.count { sum &+= UInt64(bytes[index]) }
    return sum
}

/// Writes every byte of the buffer's `mutableSpan`, one subscript at a time: one access to the
/// buffer, so one uniqueness check, for all of them.
@inline(never)
func writeBySpan(_ bytes: inout CowBuffer, tag: UInt8) {
    var span = bytes.mutableSpan
    for index in span.indices { span[index] = UInt8(truncatingIfNeeded: index) &+ tag }
}

/// Writes every byte, one subscript at a time.
@inline(never)
func writeBySubscript<Bytes: MutableCollection<UInt8>>(_ bytes: inout Bytes, tag: UInt8) where Bytes.Index == Int {
    for index in 0..<bytes.count { bytes[index] = UInt8(truncatingIfNeeded: index) &+ tag }
}

let loopMiB = option("--loop-mib", default: 64)
let loopRepetitions = option("--loop-reps", default: 9)

func subscriptLoops() throws {
    let count = loopMiB << 20
    var array = [UInt8](repeating: 7, count: count)
    var buffer = try CowBuffer(repeating: 7, count: count)
    var readTimes: ([UInt64], [UInt64]) = ([], []), writeTimes: ([UInt64], [UInt64]) = ([], [])
    var spanWriteTimes: ([UInt64], [UInt64]) = ([], [])
    for round in 0...loopRepetitions {
        let tag = UInt8(truncatingIfNeeded: round)
        var start = nanoseconds()
        writeBySubscript(&array, tag: tag)
        let arrayWrite = nanoseconds() - start
        start = nanoseconds()
        writeBySubscript(&buffer, tag: tag)
        let bufferWrite = nanoseconds() - start
        start = nanoseconds()
        let arraySum = sumBySubscript(array)
        let arrayRead = nanoseconds() - start
        start = nanoseconds()
        let bufferSum = sumBySubscript(buffer)
        let bufferRead = nanoseconds() - start
        precondition(arraySum == bufferSum && array[count - 1] == buffer[count - 1], "the loops disagree")
        start = nanoseconds()
        writeBySpan(&buffer, tag: tag &+ 1)
        let bufferSpanWrite = nanoseconds() - start
        precondition(buffer[count - 1] == array[count - 1] &+ 1, "the span loop disagrees")
        if round > 0 {   // round 0 warms up
            writeTimes.0.append(arrayWrite); writeTimes.1.append(bufferWrite)
            readTimes.0.append(arrayRead); readTimes.1.append(bufferRead)
            spanWriteTimes.0.append(arrayWrite); spanWriteTimes.1.append(bufferSpanWrite)
        }
    }
    print()
    print("# Every byte by subscript: \(loopMiB) MiB, `CowBuffer` against `[UInt8]`")
    print()
    print("Medians of \(loopRepetitions) interleaved rounds after one warm-up; nothing is shared, so nothing is copied.")
    print()
    print("| loop | `[UInt8]` | `CowBuffer` | CowBuffer ÷ [UInt8] |")
    print("| --- | ---: | ---: | ---: |")
    for (name, times) in [("read: `sum &+= b[i]`", readTimes), ("write: `b[i] = x`", writeTimes),
                          ("write: `b[i] = x`; CowBuffer through `var s = b.mutableSpan; s[i] = x`", spanWriteTimes)] {
        let arrayMedian = median(times.0), bufferMedian = median(times.1)
        print("| \(name) | \(milliseconds(arrayMedian)) | \(milliseconds(bufferMedian)) "
              + "| \(fixed(bufferMedian / arrayMedian, 2))× |")
    }
}

try subscriptLoops()

// The undo history of the README: keep every state, edit, undo everything. Each edit writes one
// byte into a page no edit wrote before, so the history holds one new page per edit. The cost
// per edit and per undo must stay the same from the first to the last (a cost that grows with
// the history is a bug), and memory must stay near one copy of each page version.

let undoMiB = option("--undo-mib", default: 256)
let edits = option("--undo-edits", default: 10_000)
let undoCount = undoMiB << 20, pageBytes = Region.pageSize

func undoHistory() throws {
    let before = residentBytes()
    var image = try CowBuffer(repeating: 0xFF, count: undoCount)
    var history: [CowBuffer] = []
    history.reserveCapacity(edits)
    var editTimes: [UInt64] = [], undoTimes: [UInt64] = []
    let pages = undoCount / pageBytes
    for edit in 0..<edits {
        let page = (edit &* 7919) % pages  // distinct pages while edits <= pages
        let start = monotonicNanoseconds()
        history.append(image)              // keeps this state: no copy
        image[page * pageBytes] = UInt8(truncatingIfNeeded: edit)   // clones the region, one page copied
        editTimes.append(monotonicNanoseconds() - start)
    }
    let afterEdits = residentBytes()
    var checked = 0
    for edit in stride(from: edits - 1, through: 0, by: -1) {
        let page = (edit &* 7919) % pages
        let start = monotonicNanoseconds()
        image = history.removeLast()       // undo
        let byte = image[page * pageBytes]
        undoTimes.append(monotonicNanoseconds() - start)
        precondition(byte == 0xFF, "undo \(edit) shows the edit it undid")
        checked += 1
    }
    precondition(image[0] == 0xFF && checked == edits, "the history lost a state")
    let tenth = max(1, edits / 10)
    func meanMicroseconds(_ samples: ArraySlice<UInt64>) -> Double {
        Double(samples.reduce(0, +)) / Double(samples.count) / 1e3
    }
    let firstEdits = meanMicroseconds(editTimes.prefix(tenth)), lastEdits = meanMicroseconds(editTimes.suffix(tenth))
    let firstUndos = meanMicroseconds(undoTimes.prefix(tenth)), lastUndos = meanMicroseconds(undoTimes.suffix(tenth))
    let written = Double(edits * pageBytes)
    print()
    print("# Undo history with CowBuffer: \(undoMiB) MiB, \(edits) edits of one new page each, then undo all")
    print()
    print("| | first \(tenth) | last \(tenth) | last ÷ first |")
    print("| --- | ---: | ---: | ---: |")
    print("| edit: `history.append(image); image[i] = x` | \(fixed(firstEdits, 1)) µs | \(fixed(lastEdits, 1)) µs | \(fixed(lastEdits / firstEdits, 2))× |")
    print("| undo: `image = history.removeLast()`, read a byte | \(fixed(firstUndos, 1)) µs | \(fixed(lastUndos, 1)) µs | \(fixed(lastUndos / firstUndos, 2))× |")
    print()
    print("Memory held after the edits: \(mebibytes(Double(afterEdits - before))) (the image is "
          + "\(undoMiB) MiB; \(mebibytes(written)) of pages written).")
}

/// nanoseconds(), under a name nothing shadows inside a function (Duration has a
/// nanoseconds initialiser).
func monotonicNanoseconds() -> UInt64 { nanoseconds() }

try undoHistory()
