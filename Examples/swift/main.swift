// cowmem-snapshots: undo and redo for a large buffer, with one clone per edit.
//
//     swift run cowmem-snapshots
//
// An editor keeps its document in a 64 MiB region. Before each edit it clones the region:
// the clone is instant and costs memory only for the pages the edit then changes, so a
// history of every state is cheap. Undo makes the document a clone of an older state.

import CowMem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The document's layout in its region: the text's length in the first 8 bytes, then the
/// text's UTF-8 bytes.
enum Layout {
    static let textOffset = 8

    static func text(of region: borrowing Region) -> String {
        region.withBytes { bytes in
            let count = Int(bytes.unsafeLoad(as: UInt64.self))
            let text = bytes.extracting(textOffset..<(textOffset + count))
            return text.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
        }
    }

    /// Replaces the text from `offset` on with `tail`: only the pages under the changed
    /// bytes (and the length) are written, so only those are copied away from the snapshots.
    static func replaceText(of region: inout Region, from offset: Int, with tail: String) {
        let bytes = Array(tail.utf8)
        region.withMutableBytes { memory in
            precondition(textOffset + offset + bytes.count <= memory.byteCount, "the document is full")
            for (index, byte) in bytes.enumerated() {
                memory.storeBytes(of: byte, toByteOffset: textOffset + offset + index, as: UInt8.self)
            }
            memory.storeBytes(of: UInt64(offset + bytes.count), toByteOffset: 0, as: UInt64.self)
        }
    }
}

/// One state of the document, kept for undo or redo. A class, because arrays hold copyable
/// elements and a region is noncopyable: the class owns the region, the array the class.
final class Snapshot {
    let region: Region

    init(_ region: consuming Region) {
        self.region = region
    }
}

/// A document with its undo and redo history. Noncopyable, like the region it owns.
struct Editor: ~Copyable {
    private(set) var document: Region
    private var undoHistory: [Snapshot] = []
    private var redoHistory: [Snapshot] = []

    init(size: Int) throws(CowMemError) {
        document = try Region(size: size)
    }

    var text: String { Layout.text(of: document) }

    var stateCount: Int { undoHistory.count + 1 + redoHistory.count }

    /// Every edit first keeps a snapshot of the state it changes.
    mutating func edit(_ action: String, from offset: Int? = nil, with text: String) throws(CowMemError) {
        undoHistory.append(Snapshot(try document.clone()))
        redoHistory.removeAll()
        Layout.replaceText(of: &document, from: offset ?? self.text.utf8.count, with: text)
        show(action)
    }

    mutating func undo() throws(CowMemError) {
        guard let previous = undoHistory.popLast() else { return }
        redoHistory.append(Snapshot(try document.clone()))
        document = try previous.region.clone()  // the old document region is destroyed here
        show("undo")
    }

    mutating func redo() throws(CowMemError) {
        guard let next = redoHistory.popLast() else { return }
        undoHistory.append(Snapshot(try document.clone()))
        document = try next.region.clone()
        show("redo")
    }

    private func show(_ action: String) {
        let padded = action + String(repeating: " ", count: max(0, 28 - action.count))
        print("\(padded) \"\(text)\"   (undo: \(undoHistory.count), redo: \(redoHistory.count))")
    }
}

var editor = try Editor(size: 64 << 20)
let megabytes = editor.document.size >> 20
print("A \(megabytes) MiB document; every edit keeps a copy-on-write snapshot.\n")
try editor.edit("append \"Hello\"", with: "Hello")
try editor.edit("append \", world\"", with: ", world")
try editor.edit("replace \"world\" by \"CowMem\"", from: 7, with: "CowMem")
try editor.edit("append \"!\"", with: "!")
try editor.undo()
try editor.undo()
try editor.redo()
try editor.edit("append \"?\"", with: "?")
try editor.undo()

let expected = "Hello, CowMem"
guard editor.text == expected else {
    print("FAILED: the document reads \"\(editor.text)\", expected \"\(expected)\"")
    exit(1)
}
print("\n\(editor.stateCount) states of a \(megabytes) MiB buffer, each a full snapshot; "
      + "only the pages an edit wrote were ever copied.")
