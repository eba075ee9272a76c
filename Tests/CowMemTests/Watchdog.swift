@testable import CowMem
import Dispatch
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Ends the whole test process, with a message, if a test has not finished in time.
///
/// `.timeLimit` records an issue, but cannot stop a thread that waits in the kernel for a
/// page that is never provided; without this, one lost fault would hang the suite (and CI)
/// until something outside kills it. The contract is "never hang", so a hang is a failure.
struct Watchdog: TestTrait, SuiteTrait, TestScoping {
    let seconds: Int

    var isRecursive: Bool { true }

    func provideScope(
        for test: Test, testCase: Test.Case?,
        performing function: @Sendable () async throws -> Void
    ) async throws {
        // Suites get their scope too; only individual tests are watched.
        guard !test.isSuite else { return try await function() }
        let finished = DispatchSemaphore(value: 0)
        let name = test.displayName ?? test.name
        let seconds = self.seconds
        let watcher = try OwnedThread(name: "cowmem-watchdog") {
            if finished.wait(timeout: .now() + .seconds(seconds)) == .timedOut {
                let message = "watchdog: test \"\(name)\" did not finish in \(seconds) s; "
                    + "a thread probably waits for a page fault that is never served. Aborting.\n"
                _ = Array(message.utf8).withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
                abort()
            }
        }
        defer {
            finished.signal()
            watcher.join()
        }
        try await function()
    }
}

extension Trait where Self == Watchdog {
    /// Aborts the test process if a test runs longer than `seconds`.
    static func watchdog(seconds: Int) -> Watchdog { Watchdog(seconds: seconds) }
}
