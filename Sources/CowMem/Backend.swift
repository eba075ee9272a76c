/// The mechanism the C library fills the pages of clones with, chosen when the library
/// starts: the best one the kernel and the process's privileges allow.
///
/// The environment variable `COWMEM_BACKEND` (`auto`, `userfaultfd`, `userfaultfd-user` or
/// `memfd`) forces one, and `COWMEM_DISABLE` masks optional features, for testing every path
/// on one kernel.
///
/// ```swift
/// let backend = try Backend.current
/// print(backend)   // "userfaultfd (minor, wp, poison, dontunmap, zero-pfn)"
/// ```
public struct Backend: Hashable, Sendable {
    /// A backend's kind. Compare with the static members; a newer C library may report a
    /// kind this overlay has no member for, which still has its ``name``.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        /// The name the C library uses.
        public let name: String

        public init(name: String) {
            self.name = name
        }

        /// Kernel-mode `userfaultfd`: pages are lent lazily, never-written pages read as the
        /// shared zero page, and system calls on unfilled pages are served.
        public static var userfaultfd: Kind { Kind(name: "userfaultfd") }

        /// User-mode-only `userfaultfd`, what an unprivileged process may open when
        /// `vm.unprivileged_userfaultfd` is 0. A system call that meets an unfilled page fails
        /// with `EFAULT`: call ``Region/prefault(_:forWriting:)`` first. Used only when asked
        /// for by name.
        public static var userfaultfdUserMode: Kind { Kind(name: "userfaultfd-user") }

        /// No `userfaultfd` at all (forbidden by seccomp, or an old kernel): clones copy the
        /// pages their source has written, at clone time.
        public static var memfd: Kind { Kind(name: "memfd") }

        public var description: String { name }
    }

    /// Which mechanism is in use.
    public let kind: Kind

    /// The optional kernel features in effect, for example `["minor", "wp", "poison"]`.
    public let features: [String]

    /// The backend of this process's C library.
    ///
    /// - Throws: ``CowMemError`` if the library could not start, for example because
    ///   `COWMEM_BACKEND` names no backend (`EINVAL`) or one that is not available here.
    ///
    /// The C functions are `cowmem_backend` and `cowmem_features`.
    public static var current: Backend {
        get throws(CowMemError) {
            let name = try Engine.backendName().get()
            let features = try Engine.features().get()
            return Backend(kind: Kind(name: name), features: features.split(separator: ",").map(String.init))
        }
    }
}

extension Backend: CustomStringConvertible {
    /// The kind and, in parentheses, the features: `userfaultfd (minor, wp, poison)`.
    public var description: String {
        features.isEmpty ? kind.name : "\(kind.name) (\(features.joined(separator: ", ")))"
    }
}
