import CowMem
import Testing

/// The Swift example on the README's front page, line for line between the markers, so the
/// snippet is compiled and run by `make test` and cannot drift from the API.
@Suite("README example", .timeLimit(.minutes(1)), .watchdog(seconds: 90))
struct ReadmeExampleTests {
    @Test("The README's Swift snippet compiles and keeps the checkpoint unchanged")
    func readmeSnippet() throws {
        // README begin
        var world = try Region(size: 256 << 20)            // 256 MiB, zero-filled
        world.withMutableBytes { $0.storeBytes(of: 1, toByteOffset: 0, as: UInt8.self) }

        let checkpoint = try world.clone()                 // instant: shares every page
        world.withMutableBytes { $0.storeBytes(of: 2, toByteOffset: 0, as: UInt8.self) }

        let saved = checkpoint.withBytes { $0.unsafeLoad(as: UInt8.self) }   // 1
        let now = world.withBytes { $0.unsafeLoad(as: UInt8.self) }          // 2
        // README end
        #expect(saved == 1)
        #expect(now == 2)
    }

    @Test("The README's CowBuffer snippet: undo gives back the kept state, one page copied")
    func readmeCowBufferSnippet() throws {
        // README begin
        var image = try CowBuffer(repeating: 0xFF, count: 64 << 20)   // 64 MiB
        var history: [CowBuffer] = []

        history.append(image)          // keeps this state: no copy
        image[1_000_000] = 0           // the first write after a copy clones the region: one page copied
        image = history.removeLast()   // undo

        let header: CowBuffer = [0x7F, 0x45, 0x4C, 0x46]   // an array literal
        print(header.span[3])                               // 70: a Span<UInt8>, no closure
        // README end
        #expect(image[1_000_000] == 0xFF)
        #expect(history.isEmpty)
        let third = header.span[3]
        #expect(third == 70 && Array(header) == [0x7F, 0x45, 0x4C, 0x46])
    }
}
