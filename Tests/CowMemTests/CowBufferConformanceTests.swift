@testable import CowMem
import Foundation
import Testing

// Array literals and Codable, checked against what [UInt8] does with the same bytes.

@Suite("CowBuffer literals and Codable", .timeLimit(.minutes(1)), .watchdog(seconds: 90))
struct CowBufferConformanceTests {
    @Test("An array literal makes a buffer of its bytes, with an array's value semantics")
    func arrayLiteral() throws {
        let header: CowBuffer = [0x7F, 0x45, 0x4C, 0x46]
        #expect(Array(header) == [0x7F, 0x45, 0x4C, 0x46])
        #expect(header.count == 4)
        #expect(header == (try CowBuffer([0x7F, 0x45, 0x4C, 0x46])))
        var copy = header
        copy[0] = 0
        #expect(Array(header) == [0x7F, 0x45, 0x4C, 0x46] && Array(copy) == [0, 0x45, 0x4C, 0x46])
        let empty: CowBuffer = []
        #expect(empty.isEmpty && empty.storage == nil && empty == CowBuffer())
    }

    @Test("A buffer encodes exactly as [UInt8] does, and decodes back to the same bytes",
          arguments: [0, 1, 5, 4096 + 17])
    func jsonRoundTrip(count: Int) throws {
        let model = pattern(count: count, tag: 12)
        let buffer = try CowBuffer(model)
        let encoded = try JSONEncoder().encode(buffer)
        #expect(encoded == (try JSONEncoder().encode(model)))
        let decoded = try JSONDecoder().decode(CowBuffer.self, from: encoded)
        #expect(Array(decoded) == model && decoded == buffer)
        #expect(try JSONDecoder().decode([UInt8].self, from: encoded) == model)
        #expect(count > 0 || decoded.storage == nil)
    }

    @Test("Encoding a copy that was written encodes its own bytes, not the original's")
    func encodingAWrittenCopy() throws {
        let model = pattern(count: 2 * pageSize, tag: 13)
        let original = try CowBuffer(model)
        var copy = original
        copy[pageSize + 1] = ~model[pageSize + 1]
        var copyModel = model
        copyModel[pageSize + 1] = ~model[pageSize + 1]
        #expect(try JSONEncoder().encode(copy) == JSONEncoder().encode(copyModel))
        #expect(try JSONEncoder().encode(original) == JSONEncoder().encode(model))
    }

    @Test("Data that is not a list of bytes does not decode",
          arguments: ["[1, 256]", "[-1]", "[1.5]", "{\"count\": 1}", "\"AAEC\""])
    func invalidData(json: String) {
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(CowBuffer.self, from: Data(json.utf8))
        }
    }

    @Test("Inside another Codable value, a buffer decodes where a [UInt8] was encoded")
    func nestedInAStruct() throws {
        struct Saved: Codable { var name: String; var pixels: [UInt8] }
        struct Loaded: Codable { var name: String; var pixels: CowBuffer }
        let encoded = try JSONEncoder().encode(Saved(name: "tile", pixels: [9, 8, 7]))
        let loaded = try JSONDecoder().decode(Loaded.self, from: encoded)
        #expect(loaded.name == "tile" && Array(loaded.pixels) == [9, 8, 7])
        let again = try JSONDecoder().decode(Saved.self, from: JSONEncoder().encode(loaded))
        #expect(again.pixels == [9, 8, 7])
    }
}
