@testable import CowMem
import Testing

// The span properties of CowBuffer and Region, checked against plain [UInt8] copies.

@Suite("CowBuffer spans", .timeLimit(.minutes(1)), .watchdog(seconds: 90))
struct CowBufferSpanTests {
    @Test("span and bytes read the buffer's bytes, and only its count of them")
    func readingSpans() throws {
        let count = 2 * pageSize + 7
        let model = pattern(count: count, tag: 3)
        let buffer = try CowBuffer(model)
        let span = buffer.span
        #expect(span.count == count)
        #expect(span.indices.map { span[$0] } == model)
        let bytes = buffer.bytes
        #expect(bytes.byteCount == count)
        #expect(bytes.byteOffsets.map { bytes.unsafeLoad(fromByteOffset: $0, as: UInt8.self) } == model)
        #expect(buffer.span[count - 1] == model[count - 1])
    }

    @Test("A span taken before a copy is written keeps showing the original's bytes")
    func spanOutlivesAWriteToACopy() throws {
        let model = pattern(count: pageSize + 1, tag: 4)
        let original = try CowBuffer(model)
        var copy = original
        let span = original.span
        copy[0] = ~model[0]
        copy[pageSize] = ~model[pageSize]
        #expect(span[0] == model[0] && span[pageSize] == model[pageSize])
        #expect(Array(original) == model)
    }

    @Test("mutableSpan on a copy writes only the copy, and on the original only the original")
    func mutableSpanKeepsCopiesApart() throws {
        let count = 3 * pageSize + 11
        let model = pattern(count: count, tag: 5)
        var original = try CowBuffer(model)
        var copy = original
        var copyModel = model
        do {
            var span = copy.mutableSpan
            for index in stride(from: 0, to: count, by: 97) { span[index] ^= 0xFF }
        }
        for index in stride(from: 0, to: count, by: 97) { copyModel[index] ^= 0xFF }
        #expect(Array(copy) == copyModel)
        #expect(Array(original) == model)

        let third = original
        var originalModel = model
        do {
            var span = original.mutableSpan
            for index in span.indices { span[index] &+= 1 }
        }
        for index in originalModel.indices { originalModel[index] &+= 1 }
        #expect(Array(original) == originalModel)
        #expect(Array(third) == model)
        #expect(Array(copy) == copyModel)
        #expect(original != third && copy != third)
    }

    @Test("mutableSpan after a clone was taken from the storage moves it to a new generation, once")
    func mutableSpanAfterLending() throws {
        let count = 2 * pageSize
        var a = try CowBuffer(pattern(count: count, tag: 6))
        var b = a
        b[1] = 0                                          // b clones a's storage: a is lent
        #expect(a.storage!.isLent)
        #expect(CowBuffer.compare(a, b) == (false, .pages(1)))
        do {
            var span = a.mutableSpan
            span[pageSize + 5] ^= 1                      // a page b did not write
        }
        #expect(a.storage!.generation == 1 && !a.storage!.isLent)
        // b's origin is gone: equality must not trust b's list of pages any more.
        #expect(CowBuffer.compare(a, b).path == .everything)
        var modelA = pattern(count: count, tag: 6)
        modelA[pageSize + 5] ^= 1
        var modelB = pattern(count: count, tag: 6)
        modelB[1] = 0
        #expect(Array(a) == modelA && Array(b) == modelB)
        b[1] = modelA[1]
        b[pageSize + 5] = modelA[pageSize + 5]
        #expect(a == b)
    }

    @Test("withSpan and withMutableSpan are the closure forms of the properties")
    func closureForms() throws {
        let model = pattern(count: pageSize + 3, tag: 7)
        var buffer = try CowBuffer(model)
        let copy = buffer
        #expect(buffer.withSpan { span in span.indices.map { span[$0] } } == model)
        buffer.withMutableSpan { span in span[2] = ~span[2] }
        var changed = model
        changed[2] = ~changed[2]
        #expect(Array(buffer) == changed && Array(copy) == model)
    }

    @Test("An empty buffer has empty spans and still no region")
    func emptySpans() throws {
        var empty = CowBuffer()
        // Through locals: #expect cannot capture a nonescapable value.
        let spansAreEmpty = empty.span.isEmpty && empty.bytes.isEmpty
        let mutableSpanIsEmpty = empty.mutableSpan.isEmpty
        #expect(spansAreEmpty && mutableSpanIsEmpty)
        #expect(empty.storage == nil)
    }
}

/// Three bytes, stride 3: a region's size is not a whole number of them.
private struct Pixel: BitwiseCopyable, Equatable {
    var red: UInt8, green: UInt8, blue: UInt8
}

@Suite("Region spans", .timeLimit(.minutes(1)), .watchdog(seconds: 90))
struct RegionSpanTests {
    @Test("span(of:) reads the region's bytes as whole elements of the type")
    func typedReading() throws {
        var region = try Region(size: 2 * pageSize)
        let model = pattern(count: region.size, tag: 8)
        region.withUnsafeMutableBytes { $0.copyBytes(from: model) }
        let words = region.span(of: UInt32.self)
        #expect(words.count == region.size / 4)
        for index in [0, 1, 1023, words.count - 1] {
            let expected = model[(4 * index)..<(4 * index + 4)].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            #expect(words[index] == expected)   // little-endian, as on x86-64 and arm64
        }
        let pixels = region.span(of: Pixel.self)
        #expect(pixels.count == region.size / 3)   // the last byte or two hold no whole pixel
        let last = pixels.count - 1
        #expect(pixels[last] == Pixel(red: model[3 * last], green: model[3 * last + 1], blue: model[3 * last + 2]))
        let bytes = region.bytes
        #expect(bytes.byteCount == region.size)
        #expect(bytes.unsafeLoad(fromByteOffset: region.size - 1, as: UInt8.self) == model[region.size - 1])
    }

    @Test("mutableSpan(of:) and mutableBytes write the region, and never a clone of it")
    func typedWriting() throws {
        var region = try Region(size: 3 * pageSize)
        var model = [UInt8](repeating: 0, count: region.size)
        do {
            var words = region.mutableSpan(of: UInt64.self)
            for index in stride(from: 0, to: words.count, by: 7) { words[index] = UInt64(UInt8(truncatingIfNeeded: index)) &* 0x0101_0101_0101_0101 }
        }
        for index in stride(from: 0, to: region.size / 8, by: 7) {
            for byte in 0..<8 { model[8 * index + byte] = UInt8(truncatingIfNeeded: index) }
        }
        let snapshot = try region.clone()
        let snapshotModel = model
        do {
            var bytes = region.mutableBytes
            bytes.storeBytes(of: 0xAB, toByteOffset: pageSize + 1, as: UInt8.self)
        }
        model[pageSize + 1] = 0xAB
        do {
            var pixels = region.mutableSpan(of: Pixel.self)
            pixels[5] = Pixel(red: 1, green: 2, blue: 3)
        }
        model[15] = 1; model[16] = 2; model[17] = 3
        #expect(firstDifference(region.withUnsafeBytes { Array($0) }, model) == nil)
        #expect(firstDifference(snapshot.withUnsafeBytes { Array($0) }, snapshotModel) == nil)
    }
}

/// The first offset where `bytes` and `model` differ, with both bytes; `nil` if they are equal
/// (so that a failure prints one offset, not two arrays of pages).
private func firstDifference(_ bytes: [UInt8], _ model: [UInt8]) -> (offset: Int, got: UInt8, expected: UInt8)? {
    guard bytes.count == model.count else { return (min(bytes.count, model.count), 0, 0) }
    guard let offset = bytes.indices.first(where: { bytes[$0] != model[$0] }) else { return nil }
    return (offset, bytes[offset], model[offset])
}
