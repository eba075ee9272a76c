@testable import CowMem
import Synchronization
import Testing

// `var b = a; b[i] = x` leaves `a` as it was, wherever the copy lives: in a class, in an
// array, in a closure, passed to and returned from functions, on another thread, or made in
// the middle of a loop of writes. Every write here is a subscript write in a plain loop, the
// kind of loop an optimizer would want to take the buffer's uniqueness check out of; every
// check compares the bytes one by one with a [UInt8] that went through the same writes.

/// The byte that `tag`'s writes put at `index`.
private func value(_ index: Int, _ tag: UInt8) -> UInt8 {
    UInt8(truncatingIfNeeded: index &* 7) &+ tag
}

/// Writes every byte of `range` by subscript, one at a time, into the buffer and its model.
private func writeLoop(_ buffer: inout CowBuffer, _ model: inout [UInt8], _ range: Range<Int>, tag: UInt8) {
    for index in range { buffer[index] = value(index, tag) }
    for index in range { model[index] = value(index, tag) }
}

/// A buffer of `count` bytes of `tag`'s pattern, and the same bytes as an array.
private func patterned(_ count: Int, tag: UInt8) throws -> (CowBuffer, [UInt8]) {
    let model = pattern(count: count, tag: tag)
    return (try CowBuffer(model), model)
}

/// Records an issue, with the first offset that differs, unless `buffer` holds `model`.
private func expectBytes(
    _ buffer: CowBuffer, _ model: [UInt8], _ what: String, sourceLocation: SourceLocation = #_sourceLocation
) {
    guard buffer.count == model.count else {
        Issue.record("\(what): count \(buffer.count), expected \(model.count)", sourceLocation: sourceLocation)
        return
    }
    if let offset = buffer.withUnsafeBytes({ firstDifference($0, model) }) {
        Issue.record("\(what): byte \(offset) is \(buffer[offset]), expected \(model[offset])",
                     sourceLocation: sourceLocation)
    }
}

/// A buffer in a class, as a model object would hold one.
private final class Document {
    var bytes: CowBuffer
    init(_ bytes: CowBuffer) { self.bytes = bytes }
}

/// One buffer handed to a thread and back, so that the thread's variable is its only holder.
private final class Handoff: @unchecked Sendable {
    // Filled before the thread starts and read after it is joined.
    var buffer: CowBuffer?
    var model: [UInt8]
    init(_ buffer: consuming CowBuffer, _ model: [UInt8]) {
        self.buffer = buffer
        self.model = model
    }
}

/// Lets `parties` threads wait for each other, spinning, so that they start writing together.
private final class StartLine: Sendable {
    private let arrived = Atomic<Int>(0)
    private let parties: Int
    init(parties: Int) { self.parties = parties }

    func wait() {
        arrived.wrappingAdd(1, ordering: .acquiringAndReleasing)
        while arrived.load(ordering: .acquiring) < parties {}
    }
}

/// A flag one thread raises and others look at, or spin on.
private final class Signal: Sendable {
    private let raised = Atomic<Bool>(false)

    func raise() { raised.store(true, ordering: .releasing) }

    var isRaised: Bool { raised.load(ordering: .acquiring) }

    func waitUntilRaised() {
        while !isRaised {}
    }
}

/// Hands `first` and `second`, each with `model`, to two threads, so that each thread's
/// variable is its buffer's only holder, and runs `body(side, &buffer, &model)` on both once
/// both have started; returns each side's buffer and model afterwards.
private func writtenOnTwoThreads(
    _ first: consuming CowBuffer, _ second: consuming CowBuffer, _ model: [UInt8],
    _ body: @escaping @Sendable (_ side: Int, _ buffer: inout CowBuffer, _ model: inout [UInt8]) -> Void
) throws -> [(buffer: CowBuffer, model: [UInt8])] {
    let sides = [Handoff(consume first, model), Handoff(consume second, model)]
    let start = StartLine(parties: 2)
    try onThreads(2) { side in
        let handoff = sides[side]
        var mine = handoff.buffer.take()!
        var model = handoff.model
        start.wait()
        body(side, &mine, &model)
        handoff.buffer = mine
        handoff.model = model
    }
    return sides.map { ($0.buffer!, $0.model) }
}

/// Records in `failures` the first byte where `buffer` and `model` differ, if any.
private func recordDifference(_ failures: Failures, _ buffer: CowBuffer, _ model: [UInt8], _ what: String) {
    if let offset = buffer.withUnsafeBytes({ firstDifference($0, model) }) {
        failures.record("\(what): byte \(offset) is \(buffer[offset]), expected \(model[offset])")
    }
}

@Suite("CowBuffer copies stay values wherever they are kept", .timeLimit(.minutes(2)), .watchdog(seconds: 150))
struct CowBufferValueTests {
    let count = 5 * pageSize + 321

    @Test("A copy kept in a class: writing either side in a loop leaves the other as it was")
    func copyInAClass() throws {
        var (buffer, model) = try patterned(count, tag: 1)
        var bufferModel = model
        let document = Document(buffer)
        writeLoop(&buffer, &bufferModel, 0..<count, tag: 2)
        expectBytes(document.bytes, model, "the class's copy after the original was written")
        expectBytes(buffer, bufferModel, "the original")

        var documentModel = model
        let again = document.bytes
        writeLoop(&document.bytes, &documentModel, 100..<(3 * pageSize), tag: 3)
        expectBytes(document.bytes, documentModel, "the class's copy, written through the class")
        expectBytes(again, model, "a copy taken from the class before")
        expectBytes(buffer, bufferModel, "the original after the class's copy was written")
    }

    @Test("Copies kept in an array: each keeps the state it was appended in")
    func copiesInAnArray() throws {
        var (buffer, model) = try patterned(count, tag: 4)
        var history: [CowBuffer] = [], models: [[UInt8]] = []
        for round in 0..<6 {
            history.append(buffer)
            models.append(model)
            let start = (round * 997) % (count / 2)
            writeLoop(&buffer, &model, start..<(start + count / 2), tag: UInt8(10 + round))
        }
        for round in history.indices {
            expectBytes(history[round], models[round], "history[\(round)]")
        }
        // Write into the array's elements in place: the original and the other elements stay.
        writeLoop(&history[2], &models[2], 0..<count, tag: 30)
        var third = history[3], thirdModel = models[3]
        writeLoop(&third, &thirdModel, pageSize..<(2 * pageSize), tag: 31)
        for round in history.indices {
            expectBytes(history[round], models[round], "history[\(round)] after writes to its neighbours")
        }
        expectBytes(third, thirdModel, "a copy of history[3]")
        expectBytes(buffer, model, "the original")
    }

    @Test("A copy captured by a closure keeps the captured bytes; the closure's own copy writes apart")
    func copyCapturedInAClosure() throws {
        var (buffer, model) = try patterned(count, tag: 5)
        var bufferModel = model
        let snapshot: () -> [UInt8] = { [buffer] in Array(buffer) }
        var captured = buffer
        var capturedModel = model
        let writeCaptured = { writeLoop(&captured, &capturedModel, (count / 3)..<count, tag: 6) }
        writeLoop(&buffer, &bufferModel, 0..<count, tag: 7)
        #expect(snapshot() == model, "the closure's copy after the original was written")
        writeCaptured()
        expectBytes(captured, capturedModel, "the variable the closure wrote")
        expectBytes(buffer, bufferModel, "the original after the closure wrote")
        #expect(snapshot() == model, "the closure's copy after the closure wrote its variable")
    }

    @Test("Copies passed to functions, written there and returned, leave the caller's bytes alone")
    func copiesMovedAcrossFunctions() throws {
        func written(_ bytes: CowBuffer, from start: Int, tag: UInt8) -> CowBuffer {
            var bytes = bytes
            for index in start..<bytes.count { bytes[index] = value(index, tag) }
            return bytes
        }
        func consumed(_ bytes: consuming CowBuffer, tag: UInt8) -> CowBuffer {
            for index in 0..<bytes.count / 2 { bytes[index] = value(index, tag) }
            return bytes
        }
        func keepAndWrite(_ bytes: inout CowBuffer, into kept: inout [CowBuffer], tag: UInt8) {
            kept.append(bytes)
            for index in bytes.indices { bytes[index] = value(index, tag) }
        }
        var (buffer, model) = try patterned(count, tag: 8)

        let returned = written(buffer, from: 10, tag: 9)
        var returnedModel = model
        for index in 10..<count { returnedModel[index] = value(index, 9) }
        expectBytes(returned, returnedModel, "the copy the function wrote and returned")
        expectBytes(buffer, model, "the caller's buffer after the function wrote its copy")

        var other = buffer
        let moved = consumed(consume other, tag: 10)
        var movedModel = model
        for index in 0..<count / 2 { movedModel[index] = value(index, 10) }
        expectBytes(moved, movedModel, "the copy consumed, written and returned")
        expectBytes(buffer, model, "the caller's buffer after the consumed copy was written")
        other = moved
        expectBytes(other, movedModel, "the variable given the result back")

        var kept: [CowBuffer] = []
        var bufferModel = model
        keepAndWrite(&buffer, into: &kept, tag: 11)
        for index in bufferModel.indices { bufferModel[index] = value(index, 11) }
        expectBytes(kept[0], model, "the copy kept by the function before it wrote through inout")
        expectBytes(buffer, bufferModel, "the buffer written through inout")
        expectBytes(returned, returnedModel, "the first returned copy, still")
    }

    @Test("Copies made in the middle of a loop of writes each keep the bytes of their moment")
    func copiesMadeInsideTheLoop() throws {
        var (buffer, model) = try patterned(count, tag: 12)
        var saved: [CowBuffer] = [], savedModels: [[UInt8]] = []
        let document = Document(CowBuffer())
        var documentModel: [UInt8] = []
        for index in 0..<count {
            if index % 4099 == 0 {
                saved.append(buffer)
                savedModels.append(model)
            }
            if index == count / 2 {
                document.bytes = buffer
                documentModel = model
            }
            buffer[index] = value(index, 13)
            model[index] = value(index, 13)
        }
        #expect(saved.count == (count + 4098) / 4099)
        for copy in saved.indices {
            expectBytes(saved[copy], savedModels[copy], "the copy made at write \(copy * 4099)")
        }
        expectBytes(document.bytes, documentModel, "the copy stored in a class halfway through")
        expectBytes(buffer, model, "the buffer written throughout")
    }

    @Test("Two copies written at the same time on two threads, each its own half, never see the other's writes")
    func copiesWrittenTogetherOnTwoThreads() throws {
        // The two threads hold the only two references. One writes first, so it clones; the
        // other starts writing a few microseconds later and goes on until the first is done,
        // while that clone may still be under way, writing the storage in place once it holds
        // it alone. The clone must not pick up any of those writes, as it would if the check
        // that sent the first thread to clone were released before the clone is made.
        let count = 64 * pageSize
        let failures = Failures()
        for trial in 0..<80 {
            let (first, model) = try patterned(count, tag: UInt8(truncatingIfNeeded: trial))
            let second = first
            let firstWrites = Signal(), firstDone = Signal()
            let delay = Duration.microseconds(trial % 10)
            let sides = try writtenOnTwoThreads(consume first, consume second, model) { side, mine, model in
                if side == 0 {
                    firstWrites.raise()
                    writeLoop(&mine, &model, 0..<(count / 2), tag: 0x5A)
                    firstDone.raise()
                } else {
                    firstWrites.waitUntilRaised()
                    let until = ContinuousClock.now + delay
                    while ContinuousClock.now < until {}
                    repeat {
                        writeLoop(&mine, &model, (count / 2)..<count, tag: 0xA5)
                    } while !firstDone.isRaised
                }
            }
            for (side, (buffer, model)) in sides.enumerated() {
                recordDifference(failures, buffer, model, "trial \(trial), side \(side)")
            }
        }
        #expect(failures.all.isEmpty, "\(failures.all.count) sides wrong in 80 trials: \(failures.all.prefix(4))")
    }

    @Test("Two copies of a storage a clone was made from, written at the same time on two threads, leave the clone and equality right")
    func copiesOfALentStorageWrittenTogether() throws {
        // As above, but a third copy was written first, so the two threads' storage is lent:
        // the clone holds it, and each write must tell that reference from the other thread's.
        // One side clones; the other writes in place once it holds the storage alone, and must
        // move it to a new generation first, or comparing the clone with it would look only at
        // the pages the clone wrote.
        let count = 16 * pageSize
        let failures = Failures()
        for trial in 0..<40 {
            let (first, model) = try patterned(count, tag: UInt8(truncatingIfNeeded: trial))
            var kept = first, keptModel = model
            kept[0] = value(0, 0x5A)
            keptModel[0] = value(0, 0x5A)
            let second = first
            let sides = try writtenOnTwoThreads(consume first, consume second, model) { side, mine, model in
                // Both make their first page what the clone's is, and change pages it did not:
                // a comparison that looked only at the clone's page would find them equal.
                writeLoop(&mine, &model, 0..<1, tag: 0x5A)
                let half = side == 0 ? pageSize..<(count / 2) : (count / 2)..<count
                writeLoop(&mine, &model, half, tag: side == 0 ? 0x5A : 0xA5)
            }
            for (side, (buffer, model)) in sides.enumerated() {
                recordDifference(failures, buffer, model, "trial \(trial), side \(side)")
                if (buffer == kept) != (model == keptModel) {
                    failures.record("trial \(trial), side \(side): compared with the clone, \(buffer == kept)")
                }
            }
            recordDifference(failures, kept, keptModel, "trial \(trial), the clone")
        }
        #expect(failures.all.isEmpty, "\(failures.all.count) failures in 40 trials: \(failures.all.prefix(4))")
    }

    @Test("A copy read over and over on one thread does not change while another thread writes the original")
    func copyReadWhileOriginalIsWritten() throws {
        let count = 32 * pageSize
        let (buffer, model) = try patterned(count, tag: 14)
        let original = Handoff(consume buffer, model)
        let reader = Handoff(original.buffer!, model)
        let start = StartLine(parties: 2)
        let failures = Failures()
        try onThreads(2) { side in
            if side == 0 {
                var mine = original.buffer.take()!
                var model = original.model
                start.wait()
                for round in 0..<4 {
                    writeLoop(&mine, &model, 0..<count, tag: UInt8(20 + round))
                }
                original.buffer = mine
                original.model = model
            } else {
                let mine = reader.buffer!
                start.wait()
                for round in 0..<40 {
                    if let offset = mine.withUnsafeBytes({ firstDifference($0, model) }) {
                        failures.record("read \(round): byte \(offset) changed")
                        return
                    }
                }
            }
        }
        #expect(failures.all.isEmpty, "\(failures.all)")
        expectBytes(reader.buffer!, model, "the copy read on the other thread")
        expectBytes(original.buffer!, original.model, "the original written on its thread")
    }
}
