// cowmem-image-undo: an undo history for a 64 MiB image, with CowBuffer and with [UInt8].
//
//     swift run -c release cowmem-image-undo
//
// A paint program keeps the image before every brush stroke so that it can undo it. Both
// versions below do that the same way, with value semantics: `history.append(image)` keeps a
// copy, `image = history.removeLast()` undoes. The copy is free in both; the difference is
// the first stroke after it. An Array then copies all 64 MiB; a CowBuffer clones its region
// and copies only the pages the stroke touches.

import CowMem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

let width = 4096, height = 4096, bytesPerPixel = 4   // RGBA, 64 MiB

/// A round brush stroke of `radius` pixels at (x, y): works on any mutable byte collection.
func stroke<Image: MutableCollection<UInt8>>(_ image: inout Image, x: Int, y: Int, radius: Int, color: UInt8)
where Image.Index == Int {
    for row in max(0, y - radius)..<min(height, y + radius) {
        for column in max(0, x - radius)..<min(width, x + radius)
        where (row - y) * (row - y) + (column - x) * (column - x) <= radius * radius {
            let pixel = (row * width + column) * bytesPerPixel
            image[pixel] = color; image[pixel + 1] = color; image[pixel + 2] = 255 - color; image[pixel + 3] = 255
        }
    }
}

func milliseconds(_ body: () throws -> Void) rethrows -> Double {
    var start = timespec(), end = timespec()
    clock_gettime(CLOCK_MONOTONIC, &start)
    try body()
    clock_gettime(CLOCK_MONOTONIC, &end)
    return Double(end.tv_sec - start.tv_sec) * 1e3 + Double(end.tv_nsec - start.tv_nsec) / 1e6
}

func show(_ milliseconds: Double) -> String {
    let hundredths = Int((milliseconds * 100).rounded())
    let fraction = hundredths % 100
    return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction) ms"
}

let strokes = [(x: 500, y: 700, color: UInt8(40)), (x: 2100, y: 2100, color: 90),
               (x: 3900, y: 300, color: 160), (x: 1200, y: 3500, color: 220)]
let blank = [UInt8](repeating: 0, count: width * height * bytesPerPixel)

var arrayImage = blank
var arrayHistory: [[UInt8]] = []
var bufferImage = try CowBuffer(blank)
var bufferHistory: [CowBuffer] = []

print("A \(width)×\(height) RGBA image (\(blank.count >> 20) MiB); keep a copy, then paint a stroke.\n")
print("| stroke | [UInt8] | CowBuffer |")
print("| --- | ---: | ---: |")
for (number, brush) in strokes.enumerated() {
    let arrayTime = milliseconds {
        arrayHistory.append(arrayImage)              // free: shares the storage
        stroke(&arrayImage, x: brush.x, y: brush.y, radius: 40, color: brush.color)   // copies 64 MiB first
    }
    let bufferTime = milliseconds {
        bufferHistory.append(bufferImage)            // free: shares the region
        stroke(&bufferImage, x: brush.x, y: brush.y, radius: 40, color: brush.color)  // copies the pages under the brush
    }
    print("| \(number + 1) at (\(brush.x), \(brush.y)) | \(show(arrayTime)) | \(show(bufferTime)) |")
}

// Both histories hold the same images, and the buffers' copies kept their own bytes.
guard bufferImage.elementsEqual(arrayImage),
      zip(bufferHistory, arrayHistory).allSatisfy({ $0.elementsEqual($1) }) else {
    print("FAILED: the CowBuffer history differs from the Array history")
    exit(1)
}

// Undo two strokes, paint another one, then undo everything.
for _ in 0..<2 {
    arrayImage = arrayHistory.removeLast()
    bufferImage = bufferHistory.removeLast()
}
stroke(&arrayImage, x: 3000, y: 3000, radius: 60, color: 7)
stroke(&bufferImage, x: 3000, y: 3000, radius: 60, color: 7)
guard bufferImage.elementsEqual(arrayImage) else {
    print("FAILED: after undo and a new stroke, the images differ")
    exit(1)
}
while let previous = bufferHistory.popLast() { bufferImage = previous }
guard bufferImage.elementsEqual(blank), bufferImage == (try CowBuffer(count: blank.count)) else {
    print("FAILED: undoing every stroke did not bring back the blank image")
    exit(1)
}
print("\nVerified: every kept state equals the Array's, byte for byte, and undoing every stroke")
print("gives the blank image back. The Array copied 64 MiB per stroke; the CowBuffer copied")
print("only the pages under each brush.")
