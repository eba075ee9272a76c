@testable import CowMem
import SystemPackage
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Errors: every errno of every wrapped C call, forced with `EngineMocking`, reaches the
// caller as the code the documentation promises, or stops the program where it can only be
// CowMem's own bug; and the limits that an ENOMEM can stand for are told apart.

/// What each errno means, by the documentation of ``CowMemError/Code``: the specification the
/// table in `CowMemError.swift` must meet.
private func documentedCode(of errno: Errno, from function: CFunction) -> CowMemError.Code {
    switch (errno, function) {
    case (.invalidArgument, .load): .notASnapshot
    case (.badFileDescriptor, .load), (.badFileDescriptor, .save), (.illegalSeek, .save), (.invalidArgument, .save):
        .unusableFileDescriptor
    case (.noMemory, _), (.overflow, _): .outOfMemory
    case (.tooManyOpenFiles, _), (.tooManyOpenFilesInSystem, _): .outOfFileDescriptors
    default: .systemError
    }
}

/// The errno values that the C library documents (man pages, ERRORS) and a few it does not.
private let forcedErrnos: [Errno] = [
    .noMemory, .overflow, .tooManyOpenFiles, .tooManyOpenFilesInSystem, .invalidArgument,
    .illegalSeek, .ioError, .resourceBusy, .notSupported, .noSpace, .permissionDenied,
    .resourceTemporarilyUnavailable,
]

/// Calls the public API that wraps `function` (the engine's own wrapper for the two that no
/// public API calls in a way a test can reach), on a fresh region or file.
private func callAPI(wrapping function: CFunction) throws(CowMemError) {
    // Forced failures name one function, so the calls that set up another one go through.
    func freshRegion() -> Region {
        try! Region(size: 2 * pageSize)
    }
    switch function {
    case .create:
        _ = try Region(size: pageSize)
    case .clone:
        _ = try freshRegion().clone()
    case .destroy:
        try freshRegion().destroy()
    case .prefault:
        try freshRegion().prefault(0..<pageSize)
    case .dirtyPages:
        _ = try freshRegion().dirtyPages()
    case .reset:
        var region = freshRegion()
        try region.reset()
    case .copy:
        var region = freshRegion()
        let source = freshRegion()
        try region.assign(from: source)
    case .save:
        let file = try! temporaryFile()
        defer { try? file.close() }
        try freshRegion().save(to: file)
    case .load:
        let file = try! temporaryFile()
        defer { try? file.close() }
        try! freshRegion().save(to: file)
        _ = try Region(loading: file)
    case .statistics:
        _ = try freshRegion().statistics
    case .backend, .features:
        _ = try Backend.current
    case .claimFaultServer:
        // The claim was made when the overlay started; a second one reports EBUSY, so only
        // the forced failure is looked at.
        _ = try Engine.claimFaultServer().get()
    case .handleFaults:
        _ = try Engine.handleFaults().get()
    }
}

extension CFunction: Codable {}

@Suite("Errors", .timeLimit(.minutes(2)), .watchdog(seconds: 150))
struct ErrorTests {
    @Test("Every errno from every C call reaches the caller as its documented code, naming the C function",
          arguments: CFunction.allCases)
    func everyMapping(function: CFunction) throws {
        for errno in forcedErrnos {
            let error = EngineMocking.forcing([errno], in: function) {
                #expect(throws: CowMemError.self) { try callAPI(wrapping: function) }
            }
            let expected = documentedCode(of: errno, from: function)
            #expect(error?.code == expected, "\(function.rawValue), \(errno)")
            #expect(error?.underlyingError == errno, "\(function.rawValue), \(errno)")
            #expect(error?.description == "\(function.rawValue) failed: \(expected) (\(errno))",
                    "\(function.rawValue), \(errno)")
        }
    }

    @Test("EBADF is the caller's mistake for the calls given the caller's descriptor",
          arguments: [CFunction.save, .load])
    func callerDescriptor(function: CFunction) throws {
        let error = EngineMocking.forcing([.badFileDescriptor], in: function) {
            #expect(throws: CowMemError.self) { try callAPI(wrapping: function) }
        }
        #expect(error?.code == .unusableFileDescriptor)
    }

    @Test("EINTR is retried until the call goes through, by every call that can be made again",
          arguments: CFunction.allCases.filter { $0 != .handleFaults && $0 != .claimFaultServer })
    func interruptedCallsAreRetried(function: CFunction) throws {
        let mocking = EngineMocking(function, failingWith: [.interrupted, .interrupted, .interrupted])
        try EngineMocking.$current.withValue(mocking) {
            try callAPI(wrapping: function)
        }
        #expect(mocking.forcedCount == 3)
    }

    @Test("The fault server's call is not retried on EINTR: its loop polls again")
    func handleFaultsReportsInterruption() {
        let result = EngineMocking.forcing([.interrupted], in: .handleFaults) { Engine.handleFaults() }
        #expect(throws: CowMemError.self) { try result.get() }
        #expect((try? result.get()) == nil)
        if case .failure(let error) = result { #expect(error.underlyingError == .interrupted) }
    }

    @Test("EFAULT from any C call stops the program: only a bug in CowMem can cause it",
          arguments: CFunction.allCases)
    func badAddressTraps(function: CFunction) async {
        await #expect(processExitsWith: .failure) { [function] in
            try? EngineMocking.forcing([.badAddress], in: function) { () throws(CowMemError) in
                try callAPI(wrapping: function)
            }
        }
    }

    @Test("EBADF from a call that only uses the library's own descriptors stops the program",
          arguments: CFunction.allCases.filter { !$0.takesCallerDescriptor })
    func ownBadDescriptorTraps(function: CFunction) async {
        await #expect(processExitsWith: .failure) { [function] in
            try? EngineMocking.forcing([.badFileDescriptor], in: function) { () throws(CowMemError) in
                try callAPI(wrapping: function)
            }
        }
    }

    @Test("Without forced failures the same calls succeed: the hook changes nothing by itself")
    func noForcedFailure() throws {
        for function in CFunction.allCases where function != .claimFaultServer && function != .handleFaults {
            try EngineMocking.forcing([], in: function) { () throws(CowMemError) in try callAPI(wrapping: function) }
        }
    }

    @Test("ENOMEM with the mappings at vm.max_map_count is out of mappings, with the count; otherwise out of memory",
          arguments: [CFunction.create, .clone, .load, .copy, .reset])
    func mappingLimitOrMemory(function: CFunction) throws {
        let mappings = try #require(MappingCount.current).mappings
        let exhausted = EngineMocking.forcing([.noMemory], in: function, mappingLimit: mappings) {
            #expect(throws: CowMemError.self) { try callAPI(wrapping: function) }
        }
        #expect(exhausted?.code == .outOfMappings)
        #expect(exhausted?.underlyingError == .noMemory)
        let description = exhausted?.description ?? ""
        #expect(description.hasPrefix("\(function.rawValue) failed: out of memory mappings (\(Errno.noMemory)): the process has "),
                "\(description)")
        #expect(description.contains("memory mappings and vm.max_map_count allows \(mappings)"), "\(description)")

        let roomy = EngineMocking.forcing([.noMemory], in: function, mappingLimit: mappings + 10_000) {
            #expect(throws: CowMemError.self) { try callAPI(wrapping: function) }
        }
        #expect(roomy?.code == .outOfMemory)
    }

    @Test("A process that has used up vm.max_map_count gets out of mappings, not out of memory",
          .enabled(if: backendKind != .memfd, "the memfd backend's regions map differently; the table is the same"))
    func realMappingExhaustion() async throws {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            var source = try Region(size: 4 * pageSize)   // starts the fault server first
            source.withMutableBytes { $0.storeBytes(of: 1, toByteOffset: 0, as: UInt8.self) }
            // Alternate the protection, so that no two neighbouring mappings merge.
            var made = 0
            while mmap(nil, pageSize, made % 2 == 0 ? PROT_READ : PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                    != MAP_FAILED {
                made += 1
            }
            let mmapErrno = errno
            var failures: [CowMemError] = []
            do throws(CowMemError) { _ = try Region(size: pageSize) } catch { failures.append(error) }
            do throws(CowMemError) { _ = try source.clone() } catch { failures.append(error) }
            let report = failures.map(\.description).joined(separator: "\n")
            _ = Array("mmap stopped after \(made) with errno \(mmapErrno)\n\(report)\n".utf8)
                .withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
            exit(failures.count == 2 && failures.allSatisfy { $0.code == .outOfMappings } ? 0 : 1)
        }
        let errorOutput = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(errorOutput.contains("cowmem_create failed: out of memory mappings"), "\(errorOutput)")
        #expect(errorOutput.contains("vm.max_map_count allows"), "\(errorOutput)")
    }

    @Test("A region larger than RAM plus swap clones: its clones charge nothing up front")
    func clonesBeyondRAM() throws {
        let limit = try #require(meminfoBytes("MemTotal")) + (try #require(meminfoBytes("SwapTotal")))
        let size = (limit / pageSize + 1) * pageSize + (1 << 30)
        var region = try Region(size: size)
        region.withMutableBytes { $0.storeBytes(of: 7, toByteOffset: size - 1, as: UInt8.self) }
        let clone = try region.clone()
        #expect(clone.withBytes { $0.unsafeLoad(fromByteOffset: size - 1, as: UInt8.self) } == 7)
    }

    @Test("On the memfd backend as well, where clones do not fold",
          .enabled(if: overcommitMode == 0, "the heuristic overcommit mode (vm.overcommit_memory=0) would refuse a charge"))
    func clonesBeyondRAMOnMemfd() async throws {
        let limit = try #require(meminfoBytes("MemTotal")) + (try #require(meminfoBytes("SwapTotal")))
        let size = (limit / pageSize + 1) * pageSize + (1 << 30)
        // The child chooses its backend before its first call.
        await #expect(processExitsWith: .success) { [size = size as Int] in
            setenv("COWMEM_BACKEND", "memfd", 1)
            guard let backend = try? Backend.current, backend.kind == .memfd else { exit(2) }
            var region = try Region(size: size)
            region.withMutableBytes { $0.storeBytes(of: 7, toByteOffset: size - 1, as: UInt8.self) }
            let clone = try region.clone()
            region.withMutableBytes { $0.storeBytes(of: 8, toByteOffset: size - 1, as: UInt8.self) }
            let seen = clone.withBytes { $0.unsafeLoad(fromByteOffset: size - 1, as: UInt8.self) }
            exit(seen == 7 ? 0 : 1)
        }
    }
}


@Suite("Errors in Swift's words, and the zero-size rule")
struct SwiftRefusalTests {
    @Test("Errors that Swift raises itself name the Swift API that refused, never a C function")
    func refusalsNameTheSwiftAPI() throws {
        var region = try Region(size: pageSize)
        let larger = try Region(size: 2 * pageSize)
        let file = try temporaryFile()
        defer { try? file.close() }
        try region.save(to: file)
        var refusals: [(error: CowMemError?, api: String)] = []
        refusals.append((#expect(throws: CowMemError.self) { _ = try Region(size: 0) }, "Region(size:)"))
        refusals.append((#expect(throws: CowMemError.self) { _ = try Region(size: -5) }, "Region(size:)"))
        refusals.append((#expect(throws: CowMemError.self) { _ = try CowBuffer(count: -1) }, "CowBuffer(count:)"))
        refusals.append((#expect(throws: CowMemError.self) { _ = try CowBuffer(repeating: 3, count: -1) },
                         "CowBuffer(repeating:count:)"))
        refusals.append((#expect(throws: CowMemError.self) { try region.assign(from: larger) }, "Region.assign(from:)"))
        refusals.append((#expect(throws: CowMemError.self) { try CowBuffer().save(to: file) }, "CowBuffer.save(to:)"))
        refusals.append((#expect(throws: CowMemError.self) { try CowBuffer().save(to: FilePath("unused")) },
                         "CowBuffer.save(to:)"))
        refusals.append((#expect(throws: CowMemError.self) { try region.save(to: FilePath("/")) }, "Region.save(to:)"))
        refusals.append((#expect(throws: CowMemError.self) { try CowBuffer(count: 1).save(to: FilePath("/")) },
                         "CowBuffer.save(to:)"))
        refusals.append((#expect(throws: CowMemError.self) { _ = try CowBuffer(loading: file, count: 2 * pageSize) },
                         "CowBuffer(loading:count:)"))
        for (error, api) in refusals {
            let description = error?.description ?? ""
            #expect(description.hasPrefix(api + ": "), "\(description)")
            #expect(!description.contains("cowmem_"), "\(description)")
            #expect(error?.underlyingError == .invalidArgument, "\(description)")
        }
    }

    @Test("One zero-size rule: every way of making zero bytes of CowBuffer is the empty buffer; a Region refuses zero")
    func oneZeroSizeRule() throws {
        let file = try temporaryFile()
        defer { try? file.close() }
        try Region(size: pageSize).save(to: file)
        let empties = [CowBuffer(), try CowBuffer(count: 0), try CowBuffer(repeating: 1, count: 0),
                       try CowBuffer([UInt8]()), try CowBuffer(EmptyCollection<UInt8>()),
                       CowBuffer(adopting: try Region(size: pageSize), count: 0),
                       try CowBuffer(loading: file, count: 0)]
        for (index, empty) in empties.enumerated() {
            #expect(empty.isEmpty && empty.storage == nil && empty == CowBuffer(), "#\(index)")
            #expect(try empty.dirtyPages() == [], "#\(index)")
        }
        // Zero is refused by Region as a negative size is, and by nothing else that makes a buffer.
        for size in [0, -1] {
            let error = #expect(throws: CowMemError.self) { _ = try Region(size: size) }
            #expect(error?.code == .invalidSize)
        }
        for count in [-1, Int.min] {
            #expect(throws: CowMemError.self) { _ = try CowBuffer(count: count) }
            #expect(throws: CowMemError.self) { _ = try CowBuffer(repeating: 0, count: count) }
        }
        // And the one byte past zero is a page of memory in both.
        #expect(try Region(size: 1).size == pageSize)
        let one = try CowBuffer(count: 1)
        #expect(one.count == 1 && one.storage?.region.size == pageSize)
    }
}

/// `vm.overcommit_memory`.
private let overcommitMode: Int? = {
    guard let file = fopen("/proc/sys/vm/overcommit_memory", "r") else { return nil }
    defer { fclose(file) }
    var mode: CInt = -1
    return withUnsafeMutablePointer(to: &mode) { fscanf_int(file, $0) } ? Int(mode) : nil
}()

private func fscanf_int(_ file: UnsafeMutablePointer<FILE>, _ value: UnsafeMutablePointer<CInt>) -> Bool {
    var line = [CChar](repeating: 0, count: 64)
    guard fgets(&line, CInt(line.count), file) != nil,
          let number = Int(String(decoding: line.prefix { $0 >= 48 && $0 <= 57 }.map { UInt8($0) }, as: UTF8.self))
    else { return false }
    value.pointee = CInt(number)
    return true
}

/// A field of `/proc/meminfo`, in bytes.
private func meminfoBytes(_ field: String) -> Int? {
    guard let file = fopen("/proc/meminfo", "r") else { return nil }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, CInt(line.count), file) != nil {
        let text = String(decoding: line.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard text.hasPrefix(field + ":") else { continue }
        return text.split(separator: " ").dropFirst().first.flatMap { Int($0) }.map { $0 * 1024 }
    }
    return nil
}
