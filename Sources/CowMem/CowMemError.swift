import SystemPackage

/// An error from CowMem: what went wrong, in CowMem's terms, and the `errno` behind it.
///
/// Compare ``code`` with the static members of ``Code``; ``underlyingError`` holds the
/// `errno` the C library reported, when there was one.
///
/// ```swift
/// do {
///     let region = try Region(size: 1 << 50)
/// } catch {
///     // error.code == .outOfMemory, error.underlyingError == .noMemory
/// }
/// ```
public struct CowMemError: Error, Hashable, Sendable {
    /// What kind of failure this is. New codes may be added in later versions:
    /// compare with `==`, and keep a default branch when you switch over them.
    public struct Code: Hashable, Sendable {
        // A private enum behind a struct, so that cases can be added without
        // breaking anyone's exhaustive switch.
        internal enum Storage: Hashable, Sendable {
            case invalidSize
            case outOfMemory
            case outOfMappings
            case outOfFileDescriptors
            case faultServerUnavailable
            case notASnapshot
            case unusableFileDescriptor
            case systemError
        }

        internal let storage: Storage

        internal init(_ storage: Storage) {
            self.storage = storage
        }

        /// The size is not a positive number of bytes, or two sizes that must match do not
        /// (`EINVAL`). Swift refuses these sizes itself, before any C call; the error still
        /// carries the `EINVAL` the C library would give.
        public static var invalidSize: Code { Code(.invalidSize) }

        /// The memory cannot be reserved or mapped (`ENOMEM`, or `EOVERFLOW` for a
        /// size too large to map at all).
        public static var outOfMemory: Code { Code(.outOfMemory) }

        /// The process has no memory mapping left: it holds as many as the kernel allows
        /// (`vm.max_map_count`, 65530 by default), and the `ENOMEM` of `mmap(2)` or
        /// `mremap(2)` means that limit, not a lack of memory. Destroying regions, or other
        /// mappings, frees some; each region takes a few. The description gives the count
        /// and the limit.
        ///
        /// Linux reports this limit with the same `ENOMEM` as a lack of memory, so the
        /// overlay tells the two apart after the failure, by counting the process's mappings
        /// in `/proc/self/maps`.
        public static var outOfMappings: Code { Code(.outOfMappings) }

        /// The process or the system has no file descriptor left (`EMFILE`, `ENFILE`).
        public static var outOfFileDescriptors: Code { Code(.outOfFileDescriptors) }

        /// The thread that serves page faults could not be started.
        public static var faultServerUnavailable: Code { Code(.faultServerUnavailable) }

        /// The file is not a CowMem snapshot: its header is wrong, it is shorter than the
        /// header says, or it was saved on a system with another page size (`EINVAL` from
        /// `cowmem_load`).
        public static var notASnapshot: Code { Code(.notASnapshot) }

        /// The file descriptor cannot be used for this: it is not open, or not open for
        /// reading (loading) or writing (saving) (`EBADF`); it is not seekable, like a pipe
        /// or a socket (`ESPIPE`); or it was opened with `O_APPEND` (`EINVAL` from
        /// `cowmem_save`).
        public static var unusableFileDescriptor: Code { Code(.unusableFileDescriptor) }

        /// Any other failure of a system call; ``CowMemError/underlyingError`` says which.
        public static var systemError: Code { Code(.systemError) }
    }

    /// What kind of failure this is.
    public let code: Code

    /// The `errno` value the C library (or the system) reported, if any.
    public let underlyingError: Errno?

    /// The C function that failed, or the Swift API that refused its input, for the
    /// description.
    internal let function: String

    /// Why Swift refused the input, in the API's own terms; `nil` when a C call failed.
    internal let reason: String?

    /// What the failure of a C call means here, when the `errno` alone does not say
    /// (the mapping count and its limit, a commit charge that can never be met).
    internal let detail: String?

    internal init(code: Code, underlyingError: Errno?, function: String, detail: String? = nil) {
        self.code = code
        self.underlyingError = underlyingError
        self.function = function
        self.reason = nil
        self.detail = detail
    }

    /// Swift refused the arguments of `api` before calling the C library, because of `reason`.
    internal init(refusing code: Code, in api: String, because reason: String) {
        self.code = code
        self.underlyingError = .invalidArgument
        self.function = api
        self.reason = reason
        self.detail = nil
    }

    /// Classifies an `errno` that a function of the C library reported.
    internal init(_ errno: Errno, from function: CFunction) {
        let code = Code(errno, from: function)
        self.init(code: code, underlyingError: errno, function: function.rawValue,
                  detail: code == .outOfMappings ? MappingCount.current?.description : nil)
    }

    /// Classifies an `errno` that a system call (`open`, `fsync`, `rename`, ...) reported;
    /// `call` names it and its arguments for the description.
    internal init(_ errno: Errno, fromSystemCall call: String) {
        self.init(code: Code(errno, from: nil), underlyingError: errno, function: call)
    }
}

extension CowMemError.Code {
    /// The one table from an `errno` to a code: what `errno` means when `function` (a
    /// function of the C library, or `nil` for a system call of the overlay's) reports it.
    internal init(_ errno: Errno, from function: CFunction?) {
        switch (errno, function) {
        // A snapshot file that is not one, or that this system cannot map.
        case (.invalidArgument, .load?):
            self = .notASnapshot
        // The caller's descriptor: not open for that, not seekable, or `O_APPEND` (the
        // region is live, so `EINVAL` from `cowmem_save` can only be the descriptor's).
        case (.badFileDescriptor, .load?), (.badFileDescriptor, .save?),
             (.illegalSeek, .save?), (.invalidArgument, .save?):
            self = .unusableFileDescriptor
        // The kernel says ENOMEM for both; only the count of mappings tells them apart.
        case (.noMemory, _?) where MappingCount.current?.isExhausted == true:
            self = .outOfMappings
        case (.noMemory, _), (.overflow, _):
            self = .outOfMemory
        case (.tooManyOpenFiles, _), (.tooManyOpenFilesInSystem, _):
            self = .outOfFileDescriptors
        default:
            self = .systemError
        }
    }
}

extension CowMemError.Code: CustomStringConvertible {
    public var description: String {
        switch storage {
        case .invalidSize: "invalid size"
        case .outOfMemory: "out of memory"
        case .outOfMappings: "out of memory mappings"
        case .outOfFileDescriptors: "out of file descriptors"
        case .faultServerUnavailable: "fault server unavailable"
        case .notASnapshot: "not a CowMem snapshot"
        case .unusableFileDescriptor: "unusable file descriptor"
        case .systemError: "system error"
        }
    }
}

extension CowMemError: CustomStringConvertible {
    /// For example `cowmem_create failed: out of memory (Cannot allocate memory)` when a C
    /// call failed, or `Region(size:): invalid size: size is 0; a region has at least one
    /// byte` when Swift refused the input itself.
    public var description: String {
        if let reason {
            return "\(function): \(code): \(reason)"
        }
        var text = "\(function) failed: \(code)"
        if let underlyingError {
            text += " (\(underlyingError))"
        }
        if let detail {
            text += ": \(detail)"
        }
        return text
    }
}
