// cowmem-swift-bench: what a Swift program pays to keep a snapshot of a large buffer and
// change one byte, with an Array (copy-on-write of the whole buffer on the first write)
// and with a CowMem region (copy-on-write of one page).
//
//     swift run -c release cowmem-swift-bench [--size-mib N] [--reps N]
//
// Prints a Markdown table of medians and the ratio. A program, not a test: run it on a
// quiet machine and compare the two rows of one run.

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
